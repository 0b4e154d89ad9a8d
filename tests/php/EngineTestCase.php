<?php

declare(strict_types=1);

namespace AsyncEngine\Tests;

use AsyncEngine\Engine;
use PDO;
use PHPUnit\Framework\TestCase;

/**
 * Each test gets its own database in a fresh temp directory, configured
 * through Engine::configure(), and a clean $_SERVER.
 */
abstract class EngineTestCase extends TestCase
{
    protected const SECRET = 'phpunit-secret-0123456789';

    protected string $dir;
    protected string $db;
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
        Engine::configure(array_fill_keys(['database', 'base_url', 'secret', 'max_workers', 'timeout',
            'max_attempts', 'retention', 'busy_timeout', 'max_args_size'], null));
        exec('rm -rf ' . escapeshellarg($this->dir));
    }

    /** Reads the database directly, as another process would. */
    protected function pdo(): PDO
    {
        $pdo = new PDO('sqlite:' . $this->db);
        $pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
        return $pdo;
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
        if (!file_exists($this->db)) {
            return [];
        }
        $pdo = $this->pdo();
        return [
            'tasks' => $pdo->query('SELECT * FROM tasks ORDER BY id')->fetchAll(PDO::FETCH_ASSOC),
            'slots' => $pdo->query('SELECT * FROM slots ORDER BY id')->fetchAll(PDO::FETCH_ASSOC),
            'endpoints' => $pdo->query('SELECT * FROM endpoints ORDER BY endpoint')->fetchAll(PDO::FETCH_ASSOC),
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
