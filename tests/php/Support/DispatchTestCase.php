<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Support;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\Servers\WebServer;

/**
 * Tasks run by themselves through a real web server: deferred from pages
 * and from the CLI, sent as signed self-requests, with no cron and no
 * traffic. Each server kind extends this with its own server.
 */
abstract class DispatchTestCase extends EngineTestCase
{
    use ScheduleAssertions;

    protected function serversLog(): string
    {
        return $this->server->log();
    }

    protected WebServer $server;
    protected string $effects;

    abstract protected function newServer(?int $port = null): WebServer;

    protected function setUp(): void
    {
        parent::setUp();
        $this->server = $this->newServer();
        $this->server->start();
        $this->effects = $this->dir . '/effects.txt';
        // This CLI process and its children send to the server too.
        $this->baseUrl = $this->server->url();
        Engine::configure(['base_url' => $this->baseUrl]);
    }

    protected function tearDown(): void
    {
        $this->server->stop();
        if ($this->hasFailed()) {
            // What the server logged (PHP errors, engine warnings) explains most failures.
            fwrite(STDERR, sprintf("\n[%s] server log:\n%s\n", static::class, substr($this->server->log(), -8000)));
        }
        parent::tearDown();
    }

    /** Defers from a page: returns the ids. */
    protected function deferFromPage(array $query): array
    {
        return $this->deferFromPageWith($query, []);
    }

    /** Waits (bounded) until no task is queued or running; returns the stats. */
    protected function waitUntilSettled(float $seconds): array
    {
        $deadline = microtime(true) + $seconds;
        do {
            $stats = Engine::stats();
            if ($stats['queued'] + $stats['running'] === 0) {
                return $stats;
            }
            usleep(50000);
        } while (microtime(true) < $deadline);
        $this->fail('tasks still pending after ' . $seconds . ' s: ' . json_encode($stats) . "\n" . $this->server->log());
    }

    /** Effect lines: [line => [deferred_at, started_at]]. */
    protected function effects(): array
    {
        $out = [];
        foreach (is_file($this->effects) ? file($this->effects, FILE_IGNORE_NEW_LINES) : [] as $line) {
            $parts = explode(' ', $line);
            $started = (float) array_pop($parts);
            $deferred = (float) array_pop($parts);
            $key = implode(' ', $parts);
            $this->assertArrayNotHasKey($key, $out, "task '$key' ran twice");
            $out[$key] = [$deferred, $started];
        }
        return $out;
    }

    public function testTasksDeferredFromPagesAndTheCliEachRunExactlyOnce(): void
    {
        $ids = [];
        for ($page = 0; $page < 10; $page++) {
            $ids = array_merge($ids, $this->deferFromPage(['n' => 50, 'prefix' => "web$page"]));
        }
        [$code, $out, $err] = $this->runPhp(sprintf(<<<'PHP'
            <?php
            for ($i = 0; $i < 500; $i++) {
                $ids[] = AsyncEngine\Engine::defer('/worker.php', 'append',
                    ['file' => %s, 'line' => "cli $i", 'deferred_at' => microtime(true)]);
            }
            echo json_encode($ids);
            PHP, var_export($this->effects, true)), [], []);
        $this->assertSame(0, $code, $err);
        $ids = array_merge($ids, json_decode($out, true));
        $this->assertCount(1000, array_unique($ids));
        $stats = $this->waitUntilSettled(120);
        $this->assertSame(1000, $stats['done'], json_encode($stats));
        $this->assertSame(0, $stats['dead']);
        $this->assertCount(1000, $this->effects());
        foreach (array_rand(array_flip($ids), 20) as $id) {
            $this->assertSame(1, Engine::status($id)['attempt']);
        }
    }

    public function testACliScriptThatExitsAtOnceStillGetsItsTasksStarted(): void
    {
        // Regression: a CLI script skipped waiting for its requests to go out, so
        // they died with it and their slots waited 60 s to be given up.
        [$code, , $err] = $this->runPhp(sprintf(<<<'PHP'
            <?php
            for ($i = 0; $i < 5; $i++) {
                AsyncEngine\Engine::defer('/worker.php', 'append', ['file' => %s, 'line' => "quick $i"]);
            }
            PHP, var_export($this->effects, true)), [], []);
        $this->assertSame(0, $code, $err);
        $stats = $this->waitUntilSettled(10);
        $this->assertSame(5, $stats['done']);
        // A request the first one fanned out may still be on its way (to
        // find nothing left); no slot waits for its 60-s deadline.
        $deadline = microtime(true) + 10;
        while (Engine::stats()['in_flight'] > 0 && microtime(true) < $deadline) {
            usleep(50000);
        }
        $this->assertSame(0, Engine::stats()['in_flight']);
    }

    public function testARequestWhoseSenderWasKilledOnItsWayIsSentAgainWithinSeconds(): void
    {
        // The server's workers have served the engine once (a task ran).
        $this->deferFromPage(['n' => 1, 'prefix' => 'warm']);
        $this->waitUntilSettled(10);
        // A process sends its request to a port that takes it and never
        // answers, and is killed (-9) while the request waits there.
        $hole = stream_socket_server('tcp://127.0.0.1:0');
        $script = $this->dir . '/killed-sender.php';
        file_put_contents($script, '<?php echo AsyncEngine\Engine::defer("/worker.php", "append", '
            . '["file" => $argv[1], "line" => "orphan", "deferred_at" => 0]), "\n"; sleep(60);');
        $proc = proc_open([PHP_BINARY, '-d', 'async_engine.database=' . $this->db,
            '-d', 'async_engine.secret=' . self::SECRET,
            '-d', 'async_engine.base_url=http://' . stream_socket_get_name($hole, false), $script, $this->effects],
            [1 => ['pipe', 'w'], 2 => ['file', $this->dir . '/killed-sender.log', 'w']], $pipes, null, getenv());
        $id = trim((string) fgets($pipes[1]));
        $request = stream_socket_accept($hole, 10);
        $this->assertNotFalse($request, 'the request reached the silent port');
        posix_kill(proc_get_status($proc)['pid'], SIGKILL);
        proc_close($proc);
        $killedAt = microtime(true);
        $this->assertSame('queued', Engine::status($id)['state']);
        $this->assertSame(1, Engine::stats()['in_flight'], 'its slot is held');
        // Its slot is freed a few seconds later (not at its 60-s deadline),
        // with no backoff, and a worker sends the task to the server.
        $stats = $this->waitUntilSettled(30);
        $this->assertSame('done', Engine::status($id)['state']);
        $this->assertSame([], $stats['failing_endpoints'], json_encode($stats));
        fwrite(STDERR, sprintf("\n[%s] a killed sender's task done %.1f s after the kill (slot deadline 60 s)\n",
            static::class, microtime(true) - $killedAt));
    }

    /** How many requests the server runs at once from its start (4 workers, max_workers 4). */
    protected function workersAtOnce(): int
    {
        return 4;
    }

    public function testABacklogRunsOnMaxWorkersRequestsAtOnce(): void
    {
        // Due together in a second, so no defer() sends: the queue's first
        // request comes from a worker's timer, and the requests that claim
        // tasks send the others.
        // Each task lasts a second: long enough that a slow machine still
        // starts the others while the first runs.
        $at = microtime(true) + 1;
        $length = 1.0;
        for ($i = 0; $i < 8; $i++) {
            Engine::defer('/worker.php', 'append',
                ['file' => $this->effects, 'line' => "backlog $i", 'sleep' => $length, 'deferred_at' => $at], ['at' => $at]);
        }
        $this->deferFromPage(['n' => 0]); // the workers watch the queue from now on
        $stats = $this->waitUntilSettled(20);
        $this->assertSame(8, $stats['done'], json_encode($stats));
        $starts = array_column($this->effects(), 1);
        sort($starts);
        // As many tasks as the server has workers started before the first
        // of them ended.
        $together = count(array_filter($starts, fn (float $s) => $s < $starts[0] + $length));
        fwrite(STDERR, sprintf("\n[%s] 8 tasks of %.1f s from a backlog: %d ran side by side, all done %.2f s after the first start\n",
            static::class, $length, $together, max($starts) + $length - $starts[0]));
        $this->assertGreaterThanOrEqual($this->workersAtOnce(), $together, 'starts: ' . json_encode(array_map(fn ($s) => round($s - $starts[0], 3), $starts)));
    }

    public function testATaskDeferredWhileItsEndpointRunsALongOneDoesNotWaitForIt(): void
    {
        // defer() sends no request while one runs the endpoint's tasks: that
        // one claims the next task when its current one ends. While that
        // task runs long, its worker hands the new task to a free slot.
        $length = 2.0;
        $long = Engine::defer('/worker.php', 'append',
            ['file' => $this->effects, 'line' => 'long', 'sleep' => $length, 'deferred_at' => microtime(true)]);
        $deadline = microtime(true) + 10;
        while (Engine::status($long)['state'] !== 'running' && microtime(true) < $deadline) {
            usleep(10000);
        }
        $this->assertSame('running', Engine::status($long)['state']);
        Engine::defer('/worker.php', 'append',
            ['file' => $this->effects, 'line' => 'next', 'deferred_at' => microtime(true)]);
        $this->assertSame(2, $this->waitUntilSettled(20)['done']);
        $effects = $this->effects();
        [$deferred, $started] = $effects['next'];
        fwrite(STDERR, sprintf("\n[%s] a task deferred while its endpoint ran a %.0f-s task started %.0f ms later\n",
            static::class, $length, ($started - $deferred) * 1000));
        $this->assertLessThan($effects['long'][1] + $length, $started, 'it did not wait for the long task');
    }

    public function testAPageDoesNotWaitForTheTasksItDefers(): void
    {
        $this->server->request('/defer.php?n=0');
        [, , $none] = $this->server->request('/defer.php?n=0');
        [$status, $body, $fifty] = $this->server->request('/defer.php?' . http_build_query(
            ['n' => 50, 'sleep' => 2, 'file' => $this->effects]
        ));
        $this->assertSame(200, $status, $body);
        fwrite(STDERR, sprintf("\n[%s] page deferring 0 tasks: %.1f ms; 50 tasks that sleep 2 s: %.1f ms\n",
            static::class, $none * 1000, $fifty * 1000));
        $this->assertLessThan(1.0, $fifty, 'the page waited for its tasks');
        $this->assertCount(0, $this->effects(), 'no task had finished when the page answered');
        // The tasks do run (the rest stop with the server).
        usleep(2500000);
        $this->assertNotEmpty($this->effects());
    }

    public function testDelayedTasksStartOnTimeWithoutTraffic(): void
    {
        foreach ([1, 2, 3] as $delay) {
            $this->deferFromPage(['n' => 2, 'delay' => $delay, 'prefix' => "delay$delay"]);
        }
        usleep(4500000); // no requests from the test meanwhile
        $effects = $this->effects();
        $this->assertCount(6, $effects);
        foreach ($effects as $line => [$deferred, $started]) {
            $delay = (int) substr($line, 5, 1);
            $late = $started - $deferred - $delay;
            $this->assertGreaterThanOrEqual(-0.01, $late, "$line started early");
            $this->assertLessThan(1.0, $late, "$line started {$late} s late");
        }
    }

    public function testADelayedTaskDeferredFromTheCliStartsOnTimeWithoutTraffic(): void
    {
        // The server's workers have served the engine once (a task ran).
        $this->deferFromPage(['n' => 1, 'prefix' => 'warm']);
        $this->waitUntilSettled(10);
        [$code, , $err] = $this->runPhp(sprintf(<<<'PHP'
            <?php
            AsyncEngine\Engine::defer('/worker.php', 'append',
                ['file' => %s, 'line' => 'cli-delayed', 'deferred_at' => microtime(true)], ['delay' => 2]);
            PHP, var_export($this->effects, true)));
        $this->assertSame(0, $code, $err);
        usleep(3500000); // no requests from the test meanwhile, no kick, no cron
        $effects = $this->effects();
        $this->assertArrayHasKey('cli-delayed', $effects, 'the task ran' . $this->server->log());
        [$deferred, $started] = $effects['cli-delayed'];
        $late = $started - $deferred - 2;
        $this->assertGreaterThanOrEqual(-0.01, $late, 'started early');
        $this->assertLessThan(1.0, $late, "started {$late} s late");
    }

    public function testAScheduleRunsEachOccurrenceOnTimeWithoutTrafficOrCron(): void
    {
        // The server's workers have served the engine once (a task ran).
        $this->deferFromPage(['n' => 1, 'prefix' => 'warm']);
        $this->waitUntilSettled(10);
        unlink($this->effects);
        $record = Engine::schedule('beat', '@every 1s', '/worker.php', 'occurrence', ['file' => $this->effects]);
        $this->assertSame(['beat', '@every 1s', 'UTC', 0, 0], [$record['name'], $record['when'], $record['timezone'], $record['runs'], $record['skipped']]);
        usleep(8500000); // no requests from the test meanwhile, no kick, no cron
        $this->assertTrue(Engine::unschedule('beat'));
        $late = $this->assertOnTimeOccurrences($this->occurrences(), 1.0, 7);
        fwrite(STDERR, sprintf("\n[%s] %d one-second occurrences, latest start %.0f ms after its time\n", static::class, count($this->occurrences()), $late * 1000));
        $this->assertSame([], Engine::schedules());
    }

    public function testAForgedHostHeaderSendsNothingElsewhere(): void
    {
        // A listener on another local port: a forged Host names it.
        $canary = stream_socket_server('tcp://127.0.0.1:0');
        stream_set_blocking($canary, false);
        $canaryAddress = stream_socket_get_name($canary, false);
        $forged = ['Host' => $canaryAddress, 'X-Forwarded-Host' => $canaryAddress, 'X-Forwarded-Port' => explode(':', $canaryAddress)[1],
            'X-Forwarded-Proto' => 'http'];
        $ids = $this->deferFromPageWith(['n' => 2], $forged);
        // An application that copies X-Forwarded-* into $_SERVER changes nothing either.
        $ids = array_merge($ids, $this->deferFromPageWith(['n' => 2, 'copy_forwarded' => 1, 'prefix' => 'copied'], $forged));
        $this->waitUntilSettled(20);
        $this->assertCount(4, $this->effects(), 'the tasks ran here');
        foreach ($ids as $id) {
            $this->assertSame(['done', 1], [Engine::status($id)['state'], Engine::status($id)['attempt']], 'no attempt lost');
        }
        $this->assertFalse(@stream_socket_accept($canary, 0), 'nothing was sent to the host the client named');
        fclose($canary);
        // What a CLI script would use, learned from a signed request: this server's own address.
        $learned = $this->pdo()->query("SELECT value FROM meta WHERE key LIKE 'learned_target:%'")->fetchColumn();
        $this->assertStringEndsWith(' 127.0.0.1:' . $this->server->port, (string) $learned);
        $this->assertStringNotContainsString((string) explode(':', $canaryAddress)[1], (string) $learned);
    }

    public function testAnUnsignedRequestLearnsNothingForTheCli(): void
    {
        // Neither request below needs the database: create it here, so the
        // query at the end reads a real meta table, whatever the server did.
        Engine::stats();
        $this->server->request('/defer.php?n=0', ['Host' => '127.0.0.1:1']);
        $this->server->request('/worker.php', ['Host' => '127.0.0.1:1']);
        $learned = $this->pdo()->query("SELECT count(*) FROM meta WHERE key LIKE 'learned_target:%'")->fetchColumn();
        $this->assertSame(0, (int) $learned, 'only a verified, signed request stores a target');
    }

    /** Defers from a page with extra request headers: returns the ids. */
    protected function deferFromPageWith(array $query, array $headers): array
    {
        [$status, $body] = $this->server->request('/defer.php?' . http_build_query($query + ['file' => $this->effects]), $headers);
        $this->assertSame(200, $status, $body . $this->server->log());
        return json_decode($body, true);
    }

    public function testKickFromTheCliStartsTasksAfterARestart(): void
    {
        $ids = $this->deferFromPage(['n' => 3, 'delay' => 1]);
        $this->server->stop();
        usleep(1200000);
        $this->server->start();
        usleep(1000000);
        $this->assertSame(3, Engine::stats()['queued'], 'a new server has no timer for them');
        // This PHPUnit process is a CLI script too; it has sent nothing, so it has no timer.
        $this->assertSame(1, Engine::kick(), 'one request for the one due endpoint');
        $this->waitUntilSettled(30);
        foreach ($ids as $id) {
            $this->assertSame('done', Engine::status($id)['state']);
        }
    }

    public function testATaskRequestNamesTheSlotItAcceptedInItsAnswerWhenItStillCan(): void
    {
        // This process's requests go to a port that never answers, so each
        // slot stays on its way and the test delivers it itself.
        $hole = stream_socket_server('tcp://127.0.0.1:0');
        Engine::configure(['base_url' => 'http://' . stream_socket_get_name($hole, false)]);
        foreach (['/worker.php' => 'said', '/worker.php?print_first=1' => 'printed first'] as $endpoint => $line) {
            Engine::defer($endpoint, 'append', ['file' => $this->effects, 'line' => $line, 'deferred_at' => 0]);
            [[$slot]] = $this->sentSlots();
            $answer = Http::request($this->server->url($endpoint), 'POST', self::signedHeaders($slot, $endpoint));
            $this->assertSame(200, $answer['status'], $answer['body']);
            // The sender then has nothing to read back; after output it reads the slot.
            $this->assertSame($line === 'said' ? $slot : null, $answer['headers']['x-async-engine-accepted'] ?? null);
            $this->assertSame([], $this->sentSlots(), 'the slot was accepted');
            $this->assertStringNotContainsString('headers already sent', $answer['body']);
        }
        $this->assertSame(['said', 'printed first'], array_keys($this->effects()));
        $this->assertStringNotContainsString('headers already sent', $this->server->log());
        fclose($hole); // the requests on their way fail: nothing to record
        usleep(200000);
    }

    public function testASettingAPageChangesWithIniSetLastsForThatRequestOnly(): void
    {
        // [pid, max_workers before the page's ini_set(), after it]
        $page = function (string $query): array {
            $answer = json_decode(Http::request($this->server->url("/settings.php$query"))['body'], true);
            return [$answer['pid'], $answer['before'], $answer['after']];
        };
        $changedOn = [];
        $checkedAfterAChange = 0;
        // A plain page sees the default; counts whether it ran in a worker that changed the setting.
        $plain = function () use ($page, &$changedOn, &$checkedAfterAChange): void {
            [$pid, $before, $after] = $page('');
            $this->assertSame([4, 4], [$before, $after]);
            $checkedAfterAChange += isset($changedOn[$pid]) ? 1 : 0;
        };
        for ($i = 0; $i < 16; $i++) {
            $workers = 5 + $i % 3;
            [$pid, $before, $after] = $page("?max_workers=$workers");
            $this->assertSame([4, $workers], [$before, $after]);
            $changedOn[$pid] = true;
            $plain();
        }
        // Some servers hand requests to their workers in a fixed turn, which
        // can keep the plain pages off the workers that changed the setting:
        // more plain pages until one runs in such a worker (bounded).
        for ($i = 0; $checkedAfterAChange === 0 && $i < 200; $i++) {
            $plain();
        }
        $this->assertGreaterThan(0, $checkedAfterAChange, 'some plain request ran in a worker that had changed the setting');
    }

    public function testAClosedPortLeavesTasksQueuedWithTheErrorUntilTheServerIsBack(): void
    {
        $this->server->stop();
        $id = Engine::defer('/worker.php', 'append', ['file' => $this->effects, 'line' => 'x', 'deferred_at' => 0],
            ['max_attempts' => 1]);
        $deadline = microtime(true) + 5;
        while (Engine::stats()['failing_endpoints'] === [] && microtime(true) < $deadline) {
            usleep(20000);
        }
        [$failing] = Engine::stats()['failing_endpoints'];
        $this->assertSame('/worker.php', $failing['endpoint']);
        $this->assertStringContainsString('could not connect', $failing['last_error']);
        $status = Engine::status($id);
        $this->assertSame(['queued', 0], [$status['state'], $status['attempt']], 'the delivery cost the task nothing');
        $this->server->start();
        usleep(1300000); // past the backoff
        Engine::kick();
        $this->waitUntilSettled(30);
        $this->assertSame('done', Engine::status($id)['state']);
        $this->assertSame([], Engine::stats()['failing_endpoints'], 'a delivery that arrived ends the backoff');
    }

    public function testFailingEndpointsBackOffAndFailingTasksDieWithTheirError(): void
    {
        $broken = Engine::defer('/status500.php', 't', [], ['max_attempts' => 2]);
        $fatal = Engine::defer('/worker.php', 'fatal', [], ['max_attempts' => 2]);
        // Retries come from the servers' own timers: no traffic from here.
        $failures = function (): int {
            $failing = array_column(Engine::stats()['failing_endpoints'], null, 'endpoint');
            return $failing['/status500.php']['failures'] ?? 0;
        };
        $deadline = microtime(true) + 20;
        while (microtime(true) < $deadline && (Engine::status($fatal)['state'] !== 'dead' || $failures() < 2)) {
            usleep(100000);
            Engine::kick(); // the CLI has no timer; the 500 case needs a sender to retry
        }
        // An endpoint that answers 500 without accept() never ran the task: it backs off.
        $b = Engine::status($broken);
        $this->assertSame(['queued', 0], [$b['state'], $b['attempt']], json_encode($b));
        $failing = array_column(Engine::stats()['failing_endpoints'], null, 'endpoint');
        $this->assertGreaterThanOrEqual(2, $failing['/status500.php']['failures']);
        $this->assertStringContainsString('answered HTTP 500', $failing['/status500.php']['last_error']);
        // A task whose handler ran and failed spends its attempts, then dies.
        $f = Engine::status($fatal);
        $this->assertSame(['dead', 2], [$f['state'], $f['attempt']], json_encode($f));
        $this->assertStringContainsString('Call to undefined function undefined_function_in_a_task()', $f['last_error']);
    }
}
