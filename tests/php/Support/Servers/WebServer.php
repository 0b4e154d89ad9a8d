<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Support\Servers;

use AsyncEngine\Tests\Support\Http;

/**
 * A web server a test starts on 127.0.0.1 (a free port), serving
 * tests/php/fixtures/www with the extension loaded and the test's database
 * and secret (or, with site(), another document root and front controller,
 * the engine settings left to the application when they are null).
 * It runs in its own process group and stops with the test.
 */
abstract class WebServer
{
    public int $port;
    /** @var resource[] one per command, in start order */
    protected array $processes = [];
    protected string $dir;
    protected string $docroot;
    /** Script that answers paths with no file behind them (a framework's index.php). */
    protected ?string $frontController = null;
    /** More ini settings for the PHP processes that serve requests. */
    protected array $ini = [];
    /** Unprivileged user (with its group) the PHP processes run as, when started by root. */
    protected ?array $user = null;

    public function __construct(protected ?string $database, protected ?string $secret, string $dir, ?int $port = null)
    {
        $this->dir = $dir;
        $this->port = $port ?? self::freePort();
        $this->docroot = dirname(__DIR__, 2) . '/fixtures/www';
    }

    /** Serves `$docroot` instead; with a front controller, paths without a file go to `$docroot/$frontController`. */
    public function site(string $docroot, ?string $frontController = null): static
    {
        $this->docroot = $docroot;
        $this->frontController = $frontController;
        return $this;
    }

    /** Sets more ini settings (name => value) for the PHP processes that serve requests. */
    public function ini(array $settings): static
    {
        $this->ini = $settings + $this->ini;
        return $this;
    }

    /** Runs the PHP processes as this user and group (the server must be started by root). */
    public function runAs(string $user, string $group): static
    {
        $this->user = [$user, $group];
        return $this;
    }

    /** The ini settings this server sets: database and secret where given, then those of ini(). */
    protected function engineIni(): array
    {
        return array_filter([
            'async_engine.database' => $this->database,
            'async_engine.secret' => $this->secret,
        ], fn ($v) => $v !== null) + $this->ini;
    }

    /**
     * A port free on 127.0.0.1 for both TCP and UDP (the hub listens on
     * both), chosen below the kernel's ephemeral range: a port the kernel
     * hands out could become some client's source port, or a connection to
     * itself, while the server that owns it is down, and then that server
     * (a hub moving to another worker) could not listen there again.
     */
    public static function freePort(): int
    {
        $range = preg_split('/\s+/', trim((string) @file_get_contents('/proc/sys/net/ipv4/ip_local_port_range')));
        $ephemeralFrom = (int) ($range[0] ?? 0);
        if ($ephemeralFrom < 4096) {
            $ephemeralFrom = 32768; // unknown or unusual: Linux's default
        }
        for ($try = 0; $try < 100; $try++) {
            $port = random_int(intdiv($ephemeralFrom, 2), $ephemeralFrom - 1);
            $tcp = @stream_socket_server("tcp://127.0.0.1:$port");
            if ($tcp === false) {
                continue;
            }
            $udp = @stream_socket_server("udp://127.0.0.1:$port", $errno, $error, STREAM_SERVER_BIND);
            fclose($tcp);
            if ($udp !== false) {
                fclose($udp);
                return $port;
            }
        }
        throw new \RuntimeException('no free port below the ephemeral range after 100 tries');
    }

    public function url(string $path = ''): string
    {
        return "http://127.0.0.1:{$this->port}$path";
    }

    /** The commands that run the server in the foreground, in start order. */
    abstract protected function commands(): array;

    public function start(): void
    {
        foreach ($this->commands() as $command) {
            $this->processes[] = proc_open(array_merge(['setsid'], $command), [
                0 => ['file', '/dev/null', 'r'],
                1 => ['file', $this->logFile(), 'a'],
                2 => ['file', $this->logFile(), 'a'],
            ], $pipes, $this->dir);
        }
        $deadline = microtime(true) + 15;
        while (microtime(true) < $deadline) {
            if (!$this->ready()) {
                usleep(20000);
                continue;
            }
            $c = @fsockopen('127.0.0.1', $this->port, $errno, $error, 0.2);
            if ($c) {
                fclose($c);
                return;
            }
            usleep(50000);
        }
        throw new \RuntimeException(static::class . " did not start on port {$this->port}: " . $this->log());
    }

    public function stop(): void
    {
        if (!$this->processes) {
            return;
        }
        foreach (array_reverse($this->processes) as $process) {
            $pid = proc_get_status($process)['pid'];
            posix_kill(-$pid, SIGTERM);
            $deadline = microtime(true) + 10;
            while (proc_get_status($process)['running'] && microtime(true) < $deadline) {
                usleep(20000);
            }
            posix_kill(-$pid, SIGKILL);
            proc_close($process);
        }
        $this->processes = [];
        // Wait until the port is free again.
        $deadline = microtime(true) + 5;
        while (($c = @fsockopen('127.0.0.1', $this->port, $errno, $error, 0.1)) && microtime(true) < $deadline) {
            fclose($c);
            usleep(50000);
        }
    }

    protected function logFile(): string
    {
        return $this->dir . '/' . basename(str_replace('\\', '/', static::class)) . '.log';
    }

    public function log(): string
    {
        return is_file($this->logFile()) ? (string) file_get_contents($this->logFile()) : '';
    }

    /** Whether the parts behind the listening port are up. */
    protected function ready(): bool
    {
        return true;
    }

    /** The pids of this server's processes that run PHP requests. */
    abstract public function workerPids(): array;

    /** The pids of every process this server started, and their children. */
    public function allPids(): array
    {
        $pids = [];
        foreach (array_keys($this->processes) as $i) {
            $pids[] = $this->pid($i);
            $pids = array_merge($pids, self::descendants($this->pid($i)));
        }
        return array_values(array_unique(array_filter($pids)));
    }

    /** GET or POST a path; returns [status, body, seconds]. */
    public function request(string $path, array $headers = [], ?string $method = null): array
    {
        $r = Http::request($this->url($path), $method, $headers, $method === 'POST' ? '' : null);
        return [$r['status'], $r['body'], $r['seconds']];
    }

    public function __destruct()
    {
        $this->stop();
    }

    /** Children (recursively) of a pid. */
    protected static function descendants(int $pid): array
    {
        $out = [];
        foreach (array_filter(explode("\n", (string) shell_exec("pgrep -P $pid"))) as $child) {
            $out[] = (int) $child;
            $out = array_merge($out, self::descendants((int) $child));
        }
        return $out;
    }

    /** The pid of the process started by command $i. */
    protected function pid(int $i = 0): int
    {
        return isset($this->processes[$i]) ? proc_get_status($this->processes[$i])['pid'] : 0;
    }
}
