<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Dispatch;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\EngineTestCase;
use AsyncEngine\Tests\Support\ScheduleAssertions;
use AsyncEngine\Tests\Support\Servers\NginxFpm;

/**
 * Two web servers (nginx + php-fpm each, on their own ports) sharing one
 * PostgreSQL database, as behind a load balancer: tasks deferred on either
 * run once on either, and when one server dies the other finishes its work.
 * Runs in bin/test's PostgreSQL pass.
 */
final class MultiServerTest extends EngineTestCase
{
    use ScheduleAssertions;

    /** @var array<string, NginxFpm> by server name */
    private array $servers = [];
    private string $effects;

    protected function setUp(): void
    {
        parent::setUp();
        if ($this->pgDatabase === null) {
            $this->markTestSkipped('PostgreSQL only: several servers share one queue through PostgreSQL');
        }
        $this->effects = $this->dir . '/effects.txt';
        foreach (['a', 'b'] as $name) {
            mkdir("{$this->dir}/$name");
            $server = new NginxFpm($this->db, self::SECRET, "{$this->dir}/$name");
            // Each server sends its self-requests to itself, at most 3 at a time.
            $server->ini([
                'async_engine.server' => $name,
                'async_engine.base_url' => $server->url(),
                'async_engine.max_workers' => '3',
            ]);
            $server->start();
            $this->servers[$name] = $server;
        }
        // This process only watches: it never sends.
        Engine::configure(['server' => 'watcher']);
    }

    protected function tearDown(): void
    {
        foreach ($this->servers as $server) {
            $server->stop();
        }
        parent::tearDown();
    }

    /** Defers $n tasks from a page of server $name; returns their ids. */
    private function deferOn(string $name, int $n, string $prefix, array $query = []): array
    {
        $server = $this->servers[$name];
        [$status, $body] = $server->request('/defer.php?' . http_build_query(
            ['n' => $n, 'prefix' => $prefix, 'file' => $this->effects, 'where' => 1] + $query,
        ));
        $this->assertSame(200, $status, $body . $server->log());
        return json_decode($body, true);
    }

    /** The lines tasks wrote: [line => [ports that ran it, in order]]. */
    private function runs(): array
    {
        $runs = [];
        foreach (is_file($this->effects) ? file($this->effects, FILE_IGNORE_NEW_LINES) : [] as $line) {
            if (!preg_match('/^(\S+ \d+) @(\d+) /', $line, $m)) {
                $this->fail("unexpected effect line: $line");
            }
            $runs[$m[1]][] = (int) $m[2];
        }
        return $runs;
    }

    /** Waits (bounded) until none of $ids is queued or running; returns their states. */
    private function waitUntilFinished(array $ids, float $seconds): array
    {
        $deadline = microtime(true) + $seconds;
        $list = "'" . implode("','", $ids) . "'";
        do {
            $states = $this->pdo()->query("SELECT state, count(*) FROM tasks WHERE id IN ($list) GROUP BY state")
                ->fetchAll(\PDO::FETCH_KEY_PAIR);
            if (($states['queued'] ?? 0) + ($states['running'] ?? 0) === 0) {
                return $states;
            }
            usleep(100000);
        } while (microtime(true) < $deadline);
        $this->fail('tasks still pending after ' . $seconds . ' s: ' . json_encode($states)
            . "\n" . $this->servers['a']->log() . "\n" . $this->servers['b']->log());
    }

    protected function serversLog(): string
    {
        return $this->servers['a']->log() . "\n" . $this->servers['b']->log();
    }

    public function testEachOccurrenceOfAScheduleRunsOnceThoughBothServersWatchIt(): void
    {
        // A page on each: both servers' workers watch the queue from then on.
        foreach ($this->servers as $server) {
            $this->assertSame(200, $server->request('/defer.php?n=0')[0]);
        }
        Engine::schedule('both', '@every 1s', '/worker.php', 'occurrence', ['file' => $this->effects]);
        usleep(10500000); // no requests, no kick
        Engine::unschedule('both');
        $runs = $this->occurrences();
        $late = $this->assertOnTimeOccurrences($runs, 1.0, 9);
        fwrite(STDERR, sprintf("\n[MultiServerTest] %d occurrences on two servers, duplicates 0, latest start %.0f ms after its time\n", count($runs), $late * 1000));
    }

    private function port(string $name): int
    {
        return (int) parse_url($this->servers[$name]->url(), PHP_URL_PORT);
    }

    public function testTasksDeferredOnBothServersRunExactlyOnceOnEitherAndTheSurvivorFinishesAfterOneDies(): void
    {
        // 2,000 tasks, deferred from pages of both servers in turn.
        $ids = [];
        for ($page = 0; $page < 10; $page++) {
            foreach (['a', 'b'] as $name) {
                $ids = array_merge($ids, $this->deferOn($name, 100, "$name$page"));
            }
        }
        $this->assertCount(2000, array_unique($ids));
        $states = $this->waitUntilFinished($ids, 120);
        $this->assertSame(['done' => 2000], $states);
        $runs = $this->runs();
        $this->assertCount(2000, $runs, 'every task wrote its line');
        $twice = array_filter($runs, fn ($ports) => count($ports) > 1);
        $this->assertSame([], $twice, 'no task ran twice');
        $ranOn = array_count_values(array_merge(...array_values($runs)));
        $this->assertGreaterThan(0, $ranOn[$this->port('a')] ?? 0, 'server a ran tasks');
        $this->assertGreaterThan(0, $ranOn[$this->port('b')] ?? 0, 'server b ran tasks');
        $crossed = count(array_filter($runs, fn ($ports, $line) => $ports[0] !== $this->port($line[0]),
            ARRAY_FILTER_USE_BOTH));

        // Now slower tasks with a short lease, and server a's php-fpm dies
        // (kill -9, master and workers) while it runs some of them.
        $more = [];
        foreach (['a', 'b'] as $name) {
            $more = array_merge($more, $this->deferOn($name, 150, "late$name", ['sleep' => 0.02, 'timeout' => 3]));
        }
        $list = "'" . implode("','", $more) . "'";
        $deadline = microtime(true) + 10;
        do {
            usleep(20000);
            $runningOnA = (int) $this->pdo()->query(
                "SELECT count(*) FROM tasks t JOIN slots s ON s.id = t.slot_id
                 WHERE t.id IN ($list) AND t.state = 'running' AND s.server = 'a'",
            )->fetchColumn();
        } while ($runningOnA === 0 && microtime(true) < $deadline);
        $this->assertGreaterThan(0, $runningOnA, 'server a was running tasks when it died');
        $this->servers['a']->killFpm();
        $killedAt = microtime(true);

        // Server b takes over a's expired leases by itself and runs the rest.
        $states = $this->waitUntilFinished($more, 90);
        $this->assertSame(['done' => 300], $states, 'every task completed on the surviving server');
        $runs = $this->runs();
        foreach ($more as $i => $id) {
            $this->assertArrayHasKey(($i < 150 ? 'latea ' : 'lateb ') . ($i % 150), $runs);
        }
        $takenOver = (int) $this->pdo()->query(
            "SELECT count(*) FROM tasks WHERE id IN ($list) AND attempt > 1",
        )->fetchColumn();
        $this->assertGreaterThan(0, $takenOver, 'tasks a held when it died were retried');
        fwrite(STDERR, sprintf(
            "\n[multi-server] 2000 tasks: a ran %d, b ran %d, %d on the server they were not deferred on; after a died: %d retried, all 300 done %.1f s after the kill\n",
            $ranOn[$this->port('a')] ?? 0,
            $ranOn[$this->port('b')] ?? 0,
            $crossed,
            $takenOver,
            microtime(true) - $killedAt,
        ));
    }
}
