<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Dispatch;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\EngineTestCase;
use AsyncEngine\Tests\Support\Http;

/** Task requests arriving through a real web server (php -S, 2 workers). */
final class ServerTest extends EngineTestCase
{
    /** @var resource|null */
    private $server;
    private int $port;

    protected function setUp(): void
    {
        parent::setUp();
        $probe = stream_socket_server('tcp://127.0.0.1:0');
        $this->port = (int) substr(strrchr(stream_socket_get_name($probe, false), ':'), 1);
        fclose($probe);
        $cmd = [PHP_BINARY, '-d', 'async_engine.database=' . $this->db, '-d', 'async_engine.secret=' . self::SECRET,
            '-S', '127.0.0.1:' . $this->port, '-t', dirname(__DIR__) . '/fixtures/www'];
        $this->server = proc_open($cmd, [1 => ['file', '/dev/null', 'w'], 2 => ['file', $this->dir . '/server.log', 'w']],
            $pipes, null, ['PHP_CLI_SERVER_WORKERS' => '2'] + getenv());
        $deadline = microtime(true) + 10;
        while (!@fsockopen('127.0.0.1', $this->port) && microtime(true) < $deadline) {
            usleep(50000);
        }
    }

    protected function tearDown(): void
    {
        if ($this->server) {
            $pid = proc_get_status($this->server)['pid'];
            // php -S with workers: stop the workers (its children) and the server itself.
            exec('pkill -TERM -P ' . $pid);
            proc_terminate($this->server);
            proc_close($this->server);
        }
        parent::tearDown();
    }

    private function post(string $path, array $headers): array
    {
        $r = Http::request("http://127.0.0.1:{$this->port}$path", 'POST', $headers, '', 10);
        return [$r['status'], $r['body']];
    }

    public function testASignedRequestRunsTasksAndAnythingElseGets403(): void
    {
        $file = $this->dir . '/effects.txt';
        $ids = [];
        for ($i = 1; $i <= 3; $i++) {
            $ids[] = Engine::defer('/worker.php', 'append', ['file' => $file, 'line' => "task $i"]);
        }
        $failing = Engine::defer('/worker.php', 'fail');
        [$slot, $endpoint] = $this->sentSlots()[0];
        $headers = self::signedHeaders($slot, $endpoint);

        [$status, $body] = $this->post('/worker.php', []);
        $this->assertSame([403, 'not a genuine self-request'], [$status, substr($body, 0, 26)]);
        [$status, $body] = $this->post('/worker.php', ['X-Async-Engine-Signature' => str_repeat('0', 64)] + $headers);
        $this->assertSame(403, $status, $body);
        $this->assertSame(4, Engine::stats()['queued'], 'rejected requests consume nothing');

        // The request claims the first task and, with more queued, sends
        // one more request (fan-out), which may run some of the rest (its
        // first may be the failing one, which "ran" does not count).
        [$status, $body] = $this->post('/worker.php', $headers);
        $this->assertSame(200, $status, $body);
        $this->assertMatchesRegularExpression('/^ran [0-4]$/', $body);
        $deadline = microtime(true) + 10;
        do {
            $done = array_filter($ids, fn (string $id): bool => Engine::status($id)['state'] === 'done');
            $error = Engine::status($failing)['last_error'];
        } while ((count($done) < 3 || $error === null) && microtime(true) < $deadline && usleep(50000) === null);
        $lines = file($file, FILE_IGNORE_NEW_LINES);
        sort($lines);
        $this->assertSame(['task 1', 'task 2', 'task 3'], $lines);
        $this->assertCount(3, $done);
        $this->assertStringContainsString('LogicException: failed on purpose', (string) $error);

        [$status] = $this->post('/worker.php', $headers);
        $this->assertSame(403, $status, 'a replay is rejected');
    }
}
