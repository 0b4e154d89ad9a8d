<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Servers;

/**
 * A web server a test starts on 127.0.0.1 (a free port), serving
 * tests/php/fixtures/www with the extension loaded and the test's database.
 * It runs in its own process group and stops with the test.
 */
abstract class WebServer
{
    public int $port;
    /** @var resource|null */
    protected $process = null;
    protected string $dir;

    public function __construct(protected string $database, protected string $secret, string $dir, ?int $port = null)
    {
        $this->dir = $dir;
        $this->port = $port ?? self::freePort();
    }

    public static function freePort(): int
    {
        $probe = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int) substr(strrchr(stream_socket_get_name($probe, false), ':'), 1);
        fclose($probe);
        return $port;
    }

    public function url(string $path = ''): string
    {
        return "http://127.0.0.1:{$this->port}$path";
    }

    /** The command that runs the server in the foreground. */
    abstract protected function command(): array;

    public function start(): void
    {
        $this->process = proc_open(array_merge(['setsid'], $this->command()), [
            0 => ['file', '/dev/null', 'r'],
            1 => ['file', $this->dir . '/' . static::class . '.out', 'a'],
            2 => ['file', $this->dir . '/' . basename(str_replace('\\', '/', static::class)) . '.log', 'a'],
        ], $pipes, $this->dir);
        $deadline = microtime(true) + 15;
        while (microtime(true) < $deadline) {
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
        if ($this->process === null) {
            return;
        }
        $pid = proc_get_status($this->process)['pid'];
        posix_kill(-$pid, SIGTERM);
        $deadline = microtime(true) + 10;
        while (proc_get_status($this->process)['running'] && microtime(true) < $deadline) {
            usleep(20000);
        }
        posix_kill(-$pid, SIGKILL);
        proc_close($this->process);
        $this->process = null;
        // Wait until the port is free again.
        $deadline = microtime(true) + 5;
        while (($c = @fsockopen('127.0.0.1', $this->port, $errno, $error, 0.1)) && microtime(true) < $deadline) {
            fclose($c);
            usleep(50000);
        }
    }

    public function log(): string
    {
        $file = $this->dir . '/' . basename(str_replace('\\', '/', static::class)) . '.log';
        return is_file($file) ? (string) file_get_contents($file) : '';
    }

    /** The pids of this server's processes that run PHP requests. */
    abstract public function workerPids(): array;

    /** GET or POST a path; returns [status, body, seconds]. */
    public function request(string $path, array $headers = [], ?string $method = null): array
    {
        $ch = curl_init($this->url($path));
        $lines = [];
        foreach ($headers as $name => $value) {
            $lines[] = "$name: $value";
        }
        curl_setopt_array($ch, [CURLOPT_HTTPHEADER => $lines, CURLOPT_RETURNTRANSFER => true, CURLOPT_TIMEOUT => 30]);
        if ($method === 'POST') {
            curl_setopt_array($ch, [CURLOPT_POST => true, CURLOPT_POSTFIELDS => '']);
        }
        $started = microtime(true);
        $body = (string) curl_exec($ch);
        $seconds = microtime(true) - $started;
        $status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        curl_close($ch);
        return [$status, $body, $seconds];
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

    protected function pid(): int
    {
        return $this->process ? proc_get_status($this->process)['pid'] : 0;
    }
}
