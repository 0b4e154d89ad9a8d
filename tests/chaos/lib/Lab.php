<?php

declare(strict_types=1);

namespace AsyncEngine\Chaos;

use AsyncEngine\Tests\Support\Servers\NginxFpm;
use AsyncEngine\Tests\Support\Servers\PhpServer;
use AsyncEngine\Tests\Support\Servers\WebServer;

/**
 * One chaos run's world: a directory with the database, a web server
 * serving www/, the processes that defer tasks, and the engine's ini
 * settings. PHP processes run as nobody when the run is root, so that
 * file permissions bite as they do on a real server.
 */
final class Lab
{
    public readonly string $dir;
    public readonly string $dbDir;
    public readonly string $database;
    public readonly WebServer $server;
    /** Deferrer processes: [proc, ids file, first index, count, page URL or null]. */
    private array $deferrers = [];
    private ?string $mount = null;
    /** Microseconds each deferrer waits between tasks. */
    private int $pause = 0;

    /** The run's own database on the PostgreSQL cluster (Pg), when it runs there. */
    public readonly ?string $pgDatabase;

    /**
     * @param string $kind "fpm" (nginx + php-fpm, 6 workers) or "php" (php -S, 4 workers)
     * @param ?string $tmpfs a size ("64m") to keep the database on a tmpfs of its own
     * @param bool $postgres a fresh database on the cluster Pg::admin() names instead of a SQLite file
     */
    public function __construct(
        public readonly string $kind,
        ?string $tmpfs = null,
        public readonly ?string $secret = null,
        bool $postgres = false,
    ) {
        $this->dir = sys_get_temp_dir() . '/async-chaos-' . bin2hex(random_bytes(4));
        $this->dbDir = "$this->dir/db";
        mkdir($this->dbDir, 0755, true);
        if ($tmpfs !== null) {
            self::run(['mount', '-t', 'tmpfs', '-o', "size=$tmpfs,mode=0755", 'tmpfs', $this->dbDir]);
            $this->mount = $this->dbDir;
        }
        $this->pgDatabase = $postgres ? 'chaos_' . bin2hex(random_bytes(4)) : null;
        if ($this->pgDatabase !== null) {
            Pg::pdo()->exec("CREATE DATABASE $this->pgDatabase");
        }
        $this->database = $this->pgDatabase !== null ? Pg::url($this->pgDatabase) : "$this->dbDir/engine.sqlite";
        if (posix_getuid() === 0) {
            self::run(['chown', '-R', 'nobody:nogroup', $this->dir]);
        }
        $this->server = $kind === 'fpm'
            ? new NginxFpm($this->database, $secret, $this->dir)
            : new PhpServer($this->database, $secret, $this->dir);
        if ($this->server instanceof NginxFpm) {
            $this->server->children = 6;
        }
        $this->server->site(dirname(__DIR__) . '/www')->ini($this->ini());
        if (posix_getuid() === 0) {
            $this->server->runAs('nobody', 'nogroup');
        }
    }

    /** The server's name, for reports. */
    public function serverName(): string
    {
        return ($this->kind === 'fpm' ? 'nginx + php-fpm' : 'php -S') . ($this->pgDatabase ? ', PostgreSQL' : '');
    }

    /** The engine's settings for every PHP process of the run. */
    private function ini(): array
    {
        return [
            'async_engine.max_workers' => $this->kind === 'fpm' ? 4 : 2,
            'async_engine.busy_timeout' => 2,
            'memory_limit' => '128M',
        ];
    }

    /** A PHP command line with the run's settings, as the engine's user. */
    public function php(array $args): array
    {
        $command = posix_getuid() === 0 ? ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'] : [];
        $command[] = PHP_BINARY;
        $ini = $this->ini() + array_filter([
            'async_engine.database' => $this->database,
            'async_engine.base_url' => $this->server->url(),
            'async_engine.secret' => $this->secret,
        ]);
        foreach ($ini as $name => $value) {
            array_push($command, '-d', "$name=$value");
        }
        return array_merge($command, $args);
    }

    /** Runs ctl.php with $args; its output, or RuntimeException with its error. */
    public function ctl(string ...$args): string
    {
        return self::run($this->php(array_merge([dirname(__DIR__) . '/ctl.php'], $args)));
    }

    /** Runs a command; its standard output, or RuntimeException. */
    public static function run(array $command): string
    {
        $proc = proc_open($command, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        $code = proc_close($proc);
        if ($code !== 0) {
            throw new \RuntimeException(implode(' ', array_slice($command, -3)) . " exited $code: " . trim($err . $out));
        }
        return $out;
    }

    /**
     * Starts $cli deferrers in the CLI and $pages that defer through the
     * page, $total tasks between them, spread over about $seconds.
     */
    public function startDeferrers(int $cli, int $pages, int $total, float $seconds): void
    {
        $this->pause = (int) (1e6 * $seconds * ($cli + $pages) / max(1, $total));
        $n = $cli + $pages;
        for ($k = 0; $k < $n; $k++) {
            $first = intdiv($total * $k, $n);
            $count = intdiv($total * ($k + 1), $n) - $first;
            $this->deferrers[$k] = [null, "$this->dir/ids-$k.txt", $first, $count, $k < $cli ? null : $this->server->url('/defer.php')];
            $this->spawnDeferrer($k);
        }
    }

    private function spawnDeferrer(int $k): void
    {
        [, $ids, $first, $count, $page] = $this->deferrers[$k];
        $done = self::recorded($ids);
        if ($done >= $count) {
            $this->deferrers[$k][0] = null;
            return;
        }
        $args = [dirname(__DIR__) . '/deferrer.php', $ids, "$this->dir/effects.txt", (string) ($first + $done), (string) ($count - $done), (string) $this->pause];
        $log = "$this->dir/deferrer-$k.log";
        $this->deferrers[$k][0] = proc_open($this->php($page === null ? $args : [...$args, $page]),
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', $log, 'a'], 2 => ['file', $log, 'a']], $pipes);
    }

    /** Kills a running deferrer with SIGKILL, mid-call, and starts it again for the rest of its tasks. */
    public function killADeferrer(): bool
    {
        $running = array_keys(array_filter($this->deferrers, fn ($d) => $d[0] && proc_get_status($d[0])['running']));
        if (!$running) {
            return false;
        }
        $k = $running[array_rand($running)];
        $pid = proc_get_status($this->deferrers[$k][0])['pid'];
        posix_kill($pid, SIGKILL);
        proc_close($this->deferrers[$k][0]);
        $this->spawnDeferrer($k);
        return true;
    }

    /** Whether any deferrer is still at work. */
    public function deferring(): bool
    {
        foreach ($this->deferrers as $d) {
            if ($d[0] && proc_get_status($d[0])['running']) {
                return true;
            }
        }
        return false;
    }

    /** Stops every deferrer (the phase is over). */
    public function stopDeferrers(): void
    {
        foreach ($this->deferrers as $k => $d) {
            if ($d[0]) {
                posix_kill(proc_get_status($d[0])['pid'], SIGKILL);
                proc_close($d[0]);
                $this->deferrers[$k][0] = null;
            }
        }
    }

    /** How many tasks the deferrers have recorded, and how often they were refused. */
    public function deferred(): array
    {
        $recorded = $refused = 0;
        foreach ($this->deferrers as [, $ids]) {
            $recorded += self::recorded($ids);
            $refused += is_file("$ids.refused") ? count(file("$ids.refused")) : 0;
        }
        return [$recorded, $refused];
    }

    /** Complete lines "id kind" in an ids file. */
    private static function recorded(string $file): int
    {
        return is_file($file) ? preg_match_all(Workload::RECORD . 'm', (string) file_get_contents($file)) : 0;
    }

    /** Refusal messages by kind, for the report. */
    public function refusals(): array
    {
        $out = [];
        foreach (glob("$this->dir/ids-*.txt.refused") as $file) {
            foreach (file($file, FILE_IGNORE_NEW_LINES) as $line) {
                $key = substr(preg_replace(["/'[^']*'/", '/\d+/'], ["'…'", 'N'], $line), 0, 120);
                $out[$key] = ($out[$key] ?? 0) + 1;
            }
        }
        arsort($out);
        return $out;
    }

    /** Stops everything the run started and removes its directory. */
    public function close(bool $keep = false): void
    {
        $this->stopDeferrers();
        $this->server->stop();
        if ($this->mount !== null) {
            self::run(['umount', '-l', $this->mount]);
        }
        if (!$keep) {
            self::run(['rm', '-rf', $this->dir]);
            if ($this->pgDatabase !== null) {
                Pg::pdo()->exec("DROP DATABASE $this->pgDatabase WITH (FORCE)");
            }
        }
    }
}
