<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Support;

use AsyncEngine\Engine;
use PDO;
use PHPUnit\Framework\TestCase;

/**
 * Each test gets its own database, configured through Engine::configure(),
 * a fresh temp directory and a clean $_SERVER. The database is a SQLite file
 * in that directory, or, when ASYNC_ENGINE_TEST_PG names the test cluster's
 * admin URL (bin/test sets it for its PostgreSQL run), a fresh database there.
 */
abstract class EngineTestCase extends TestCase
{
    protected const SECRET = 'phpunit-secret-0123456789';

    protected string $dir;
    /** The test's database: a SQLite path or a postgres:// URL. */
    protected string $db;
    /** The test's PostgreSQL database name, when the tests run on PostgreSQL. */
    protected ?string $pgDatabase = null;
    /** Where the engine sends self-requests in these tests: a port that takes connections and never answers. */
    protected string $baseUrl;
    /** @var resource */
    private $blackHole;
    private array $server;

    protected function setUp(): void
    {
        $this->server = $_SERVER;
        $this->dir = sys_get_temp_dir() . '/async-engine-phpunit-' . bin2hex(random_bytes(6));
        mkdir($this->dir);
        $this->db = $this->dir . '/engine.sqlite';
        if (self::pgAdmin() !== null) {
            $this->pgDatabase = 't_' . bin2hex(random_bytes(6));
            self::adminPdo()->exec("CREATE DATABASE {$this->pgDatabase}");
            $this->db = Database::named((string) self::pgAdmin(), $this->pgDatabase);
        }
        // Requests sent there wait unanswered, so their slots stay "sent" until
        // a test makes the request arrive (or the port closes in tearDown).
        $this->blackHole = stream_socket_server('tcp://127.0.0.1:0');
        $this->baseUrl = 'http://' . stream_socket_get_name($this->blackHole, false);
        Engine::configure(['database' => $this->db, 'secret' => self::SECRET, 'max_workers' => 4,
            'base_url' => $this->baseUrl]);
    }

    protected function tearDown(): void
    {
        fclose($this->blackHole);
        $_SERVER = $this->server;
        // Back to the ini values for every setting, whatever the test changed.
        Engine::configure(array_fill_keys(['database', 'site', 'server', 'base_url', 'secret', 'max_workers', 'timeout',
            'max_attempts', 'retention', 'busy_timeout', 'max_args_size', 'max_queued', 'dead_retention', 'log',
            'timezone', 'hub_listen', 'hub_history', 'hub_jwt_key', 'hub_max_event_size'], null));
        self::removeDir($this->dir);
        if ($this->pgDatabase !== null) {
            self::adminPdo()->exec("DROP DATABASE {$this->pgDatabase} WITH (FORCE)");
        }
    }

    /**
     * Removes a test's directory. This process's sender thread may still be
     * recording a request's outcome there (the port it waited on just
     * closed) and create a file while it goes: try again until it is gone.
     */
    protected static function removeDir(string $dir): void
    {
        $deadline = microtime(true) + 5;
        do {
            exec('rm -rf ' . escapeshellarg($dir) . ' 2>/dev/null');
            if (!file_exists($dir)) {
                return;
            }
            usleep(50000);
        } while (microtime(true) < $deadline);
        throw new \RuntimeException("could not remove $dir: something keeps writing into it");
    }

    /** The test cluster's admin URL when the tests run on PostgreSQL, else null. */
    protected static function pgAdmin(): ?string
    {
        $url = getenv('ASYNC_ENGINE_TEST_PG');
        return $url === false || $url === '' ? null : $url;
    }

    /** A PDO connection to the test cluster as its administrator (to $database, else its own). */
    protected static function adminPdo(?string $database = null): PDO
    {
        $admin = (string) self::pgAdmin();
        return Database::open($database === null ? $admin : Database::named($admin, $database));
    }

    /** Skips a test of SQLite's own behaviour (files, locks) in the PostgreSQL run. */
    protected function requireSqlite(string $why): void
    {
        if ($this->pgDatabase !== null) {
            $this->markTestSkipped("SQLite only: $why");
        }
    }

    /** The extension's section of phpinfo(), as `php --ri async_engine` prints it. */
    protected static function moduleInfo(): string
    {
        ob_start();
        (new \ReflectionExtension('async_engine'))->info();
        return (string) ob_get_clean();
    }

    /** Reads the database directly, as another process would. */
    protected function pdo(): PDO
    {
        return Database::open($this->db);
    }

    /** The slots whose requests are on their way: [slot id, endpoint]. */
    protected function sentSlots(): array
    {
        return $this->pdo()->query("SELECT id, endpoint FROM slots WHERE state = 'sent' ORDER BY created_at")
            ->fetchAll(PDO::FETCH_NUM);
    }

    /** The headers of a self-request, signed the way the protocol says (independent of the extension). */
    protected static function signedHeaders(string $slot, string $endpoint, ?int $time = null, string $secret = self::SECRET): array
    {
        $time ??= time();
        return [
            'X-Async-Engine-Slot' => $slot,
            'X-Async-Engine-Time' => (string) $time,
            'X-Async-Engine-Signature' => hash_hmac('sha256', "$slot\n$endpoint\n$time", $secret),
        ];
    }

    /** Makes $_SERVER look like a self-request arriving at $endpoint. */
    protected function arrive(string $endpoint, array $headers, string $method = 'POST'): void
    {
        $_SERVER['REQUEST_METHOD'] = $method;
        $_SERVER['REQUEST_URI'] = $endpoint;
        foreach ($headers as $name => $value) {
            $_SERVER['HTTP_' . strtoupper(str_replace('-', '_', $name))] = $value;
        }
    }

    /** Simulates the arrival of the oldest sent request. */
    protected function arriveNext(): array
    {
        $slots = $this->sentSlots();
        $this->assertNotEmpty($slots, 'a request was dispatched');
        [$slot, $endpoint] = $slots[0];
        $this->arrive($endpoint, self::signedHeaders($slot, $endpoint));
        return [$slot, $endpoint];
    }

    /** Everything that makes up the queue's state, to show that a call changed nothing. */
    protected function snapshot(): array
    {
        if ($this->pgDatabase === null && !file_exists($this->db)) {
            return [];
        }
        $pdo = $this->pdo();
        return [
            'tasks' => $pdo->query('SELECT * FROM tasks ORDER BY id')->fetchAll(PDO::FETCH_ASSOC),
            'slots' => $pdo->query('SELECT * FROM slots ORDER BY id')->fetchAll(PDO::FETCH_ASSOC),
            'endpoints' => $pdo->query('SELECT * FROM endpoints ORDER BY endpoint')->fetchAll(PDO::FETCH_ASSOC),
            'meta' => $pdo->query('SELECT * FROM meta ORDER BY key')->fetchAll(PDO::FETCH_ASSOC),
        ];
    }

    /** Runs a PHP script in a child process with the extension and this test's settings. */
    protected function runPhp(string $code, array $env = [], array $prefix = []): array
    {
        $script = $this->dir . '/child-' . bin2hex(random_bytes(4)) . '.php';
        file_put_contents($script, $code);
        $cmd = array_merge($prefix, [
            PHP_BINARY,
            '-d', 'async_engine.database=' . $this->db,
            '-d', 'async_engine.secret=' . self::SECRET,
            '-d', 'async_engine.base_url=' . $this->baseUrl,
            $script,
        ]);
        $proc = proc_open($cmd, [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, null, $env + getenv());
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        $code = proc_close($proc);
        return [$code, $out, $err];
    }
}
