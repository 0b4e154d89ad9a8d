<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Api;

use AsyncEngine\Engine;
use AsyncEngine\EngineException;
use AsyncEngine\InvalidTask;
use AsyncEngine\RequestRejected;
use AsyncEngine\Task;
use AsyncEngine\Tests\Support\EngineTestCase;

/**
 * Each test is its own PHP process, as each task request is: what a request
 * holds (its slot, its claimed tasks) ends with it.
 *
 * @runTestsInSeparateProcesses
 */
final class AcceptTest extends EngineTestCase
{
    public function testAcceptClaimsTheHighestPriorityDueTask(): void
    {
        $low = Engine::defer('/w.php', 'low', ['n' => 1]);
        $high = Engine::defer('/w.php', 'high', ['n' => 2], ['priority' => 10]);
        Engine::defer('/w.php', 'later', [], ['delay' => 60, 'priority' => 99]);
        $this->arriveNext();
        $task = Engine::accept();
        $this->assertInstanceOf(Task::class, $task);
        $this->assertSame([$high, '/w.php', 'high', ['n' => 2], 1], [$task->id, $task->endpoint, $task->name, $task->args, $task->attempt]);
        $status = Engine::status($high);
        $this->assertSame('running', $status['state']);
        $this->assertEqualsWithDelta(microtime(true) + 300, $status['lease_until'], 2);
        $task->complete();
        $this->assertSame('done', Engine::status($high)['state']);
        // The same request may go on with the next due task; the delayed one is not due.
        $next = Engine::accept();
        $this->assertSame($low, $next->id);
        $next->complete();
        $this->assertNull(Engine::accept());
    }

    public function testTaskPropertiesAreReadOnly(): void
    {
        Engine::defer('/w.php', 't');
        $this->arriveNext();
        $task = Engine::accept();
        try {
            $task->name = 'other';
            $this->fail('a task property was written');
        } catch (\Throwable $e) {
            $this->assertStringContainsString('No setter available', $e->getMessage());
            $this->assertSame('t', $task->name);
        }
        $task->complete();
    }

    public function rejectedRequests(): iterable
    {
        yield 'unsigned' => ['unsigned', 'POST', 'headers are missing'];
        yield 'forged' => ['forged', 'POST', 'bad signature'];
        yield 'other secret' => ['other secret', 'POST', 'bad signature'];
        yield 'expired' => ['expired', 'POST', 'expired'];
        yield 'wrong slot' => ['wrong slot', 'POST', "unknown, expired, another site's, or already used"];
        yield 'malformed slot' => ['malformed slot', 'POST', 'malformed slot'];
        yield 'GET' => ['genuine', 'GET', 'not POST'];
    }

    private static function tampered(string $how, string $slot, string $ep): array
    {
        return match ($how) {
            'unsigned' => [],
            'forged' => ['X-Async-Engine-Signature' => str_repeat('ab', 32)] + self::signedHeaders($slot, $ep),
            'other secret' => self::signedHeaders($slot, $ep, null, 'someone-elses-secret!!'),
            'expired' => self::signedHeaders($slot, $ep, time() - 3600),
            'wrong slot' => self::signedHeaders('ffff' . substr($slot, 4), $ep),
            'malformed slot' => ['X-Async-Engine-Slot' => '../x'] + self::signedHeaders($slot, $ep),
            'genuine' => self::signedHeaders($slot, $ep),
        };
    }

    /** @dataProvider rejectedRequests */
    public function testRequestsThatAreNotGenuineAreRejectedAndConsumeNothing(string $how, string $method, string $message): void
    {
        Engine::defer('/w.php', 't');
        [[$slot, $endpoint]] = $this->sentSlots();
        $before = $this->snapshot();
        $this->arrive($endpoint, self::tampered($how, $slot, $endpoint), $method);
        try {
            Engine::accept();
            $this->fail('accepted');
        } catch (RequestRejected $e) {
            $this->assertStringContainsString($message, $e->getMessage());
        }
        $this->assertSame($before, $this->snapshot());
        // The genuine request still claims the task.
        $this->arrive($endpoint, self::signedHeaders($slot, $endpoint));
        $this->assertNotNull(Engine::accept(), 'the genuine request claims the task: ' . json_encode($this->snapshot()));
    }

    public function testAReplayedRequestClaimsNothing(): void
    {
        Engine::defer('/w.php', 'a');
        Engine::defer('/w.php', 'b', [], ['delay' => 0.2]);
        $headers = self::signedHeaders(...$this->sentSlots()[0]);
        $this->arrive('/w.php', $headers);
        $this->assertSame('a', Engine::accept()->name);
        // Shut the request: a new process replays the captured headers.
        usleep(300000);
        [$code, $out] = $this->runPhp('<?php ' . $this->arriveCode('/w.php', $headers) . '
            try { AsyncEngine\Engine::accept(); echo "accepted"; } catch (AsyncEngine\RequestRejected $e) { echo "rejected: ", $e->getMessage(); }');
        $this->assertStringStartsWith('rejected: ', $out);
        $this->assertStringContainsString('already used', $out);
        $this->assertSame(1, Engine::stats()['queued']);
    }

    private function arriveCode(string $endpoint, array $headers): string
    {
        $code = '$_SERVER["REQUEST_METHOD"] = "POST"; $_SERVER["REQUEST_URI"] = ' . var_export($endpoint, true) . ';';
        foreach ($headers as $name => $value) {
            $code .= '$_SERVER[' . var_export('HTTP_' . strtoupper(str_replace('-', '_', $name)), true) . '] = ' . var_export($value, true) . ';';
        }
        return $code;
    }

    public function testServeRunsHandlersAndFailuresRetryThenDie(): void
    {
        $ok = Engine::defer('/w.php', 'ok', ['x' => 1]);
        $boom = Engine::defer('/w.php', 'boom', [], ['max_attempts' => 2]);
        $nobody = Engine::defer('/w.php', 'unknown-task');
        $this->arriveNext();
        $seen = [];
        $ran = Engine::serve([
            'ok' => function (array $args, Task $task) use (&$seen) {
                $seen[] = [$task->name, $args];
            },
            'boom' => function () {
                throw new \DomainException('it broke');
            },
        ]);
        $this->assertSame(3, $ran);
        $this->assertSame([['ok', ['x' => 1]]], $seen);
        $this->assertSame('done', Engine::status($ok)['state']);
        $failed = Engine::status($boom);
        $this->assertSame('queued', $failed['state']);
        $this->assertSame(1, $failed['attempt']);
        $this->assertStringStartsWith('DomainException: it broke in ' . __FILE__, $failed['last_error']);
        $this->assertEqualsWithDelta(microtime(true) + 1.125, $failed['due_at'], 0.2, 'backoff 1 s plus up to 25 % jitter');
        $this->assertStringContainsString("no handler for task 'unknown-task' at /w.php (handlers: ok, boom)", Engine::status($nobody)['last_error']);
    }

    public function testTasksListsNewestFirstAndPurgeDeletesFinishedTasks(): void
    {
        $dead = [];
        for ($i = 0; $i < 3; $i++) {
            $dead[] = Engine::defer('/w.php', 'doomed', ['i' => $i], ['max_attempts' => 1]);
        }
        $done = Engine::defer('/w.php', 'fine');
        $cancelled = Engine::defer('/w.php', 'later', [], ['delay' => 60]);
        $queued = Engine::defer('/w.php', 'later', [], ['delay' => 60]);
        $this->assertTrue(Engine::cancel($cancelled));
        $this->arriveNext();
        while ($task = Engine::accept()) {
            $task->name === 'fine' ? $task->complete() : $task->fail("broke {$task->args['i']}");
        }
        $listed = Engine::tasks('dead');
        $this->assertSame(array_reverse($dead), array_column($listed, 'id'));
        $this->assertSame(['broke 2', 'broke 1', 'broke 0'], array_column($listed, 'last_error'));
        $this->assertSame(array_keys(Engine::status($dead[0])), array_keys($listed[0]), 'records as status() gives them');
        $this->assertSame([$dead[2], $dead[1]], array_column(Engine::tasks('dead', 2), 'id'));
        $this->assertSame([$done], array_column(Engine::tasks('done'), 'id'));
        $this->assertSame([$queued], array_column(Engine::tasks('queued'), 'id'));
        $this->assertSame([], Engine::tasks('running'));

        $this->assertSame(0, Engine::purge(3600), 'nothing finished an hour ago');
        $this->assertSame(2, Engine::purge(), 'done and cancelled; dead tasks are kept');
        $this->assertNull(Engine::status($done));
        $this->assertNull(Engine::status($cancelled));
        $this->assertSame(3, Engine::purge(0, true));
        $this->assertSame([], Engine::tasks('dead'));
        $this->assertSame('queued', Engine::status($queued)['state'], 'queued tasks are never purged');
    }

    public function testHistoryCountsFinishedTasksPerInterval(): void
    {
        $empty = Engine::history(60, 10);
        $this->assertCount(6, $empty);
        $this->assertSame([0], array_values(array_unique(array_merge(array_column($empty, 'done'), array_column($empty, 'dead')))));
        foreach (['a', 'b', 'c'] as $name) {
            Engine::defer('/w.php', $name, [], ['max_attempts' => 1]);
        }
        $this->arriveNext();
        while ($task = Engine::accept()) {
            $task->name === 'c' ? $task->fail('no') : $task->complete();
        }
        $now = microtime(true);
        $rows = Engine::history();
        $this->assertCount(30, $rows, '300 s in 10 s intervals');
        $last = end($rows);
        $this->assertSame(['at', 'done', 'dead'], array_keys($last));
        $this->assertEqualsWithDelta(floor($now / 10) * 10, $last['at'], 10.001, 'the last interval holds now');
        $this->assertSame(2, array_sum(array_column($rows, 'done')));
        $this->assertSame(1, array_sum(array_column($rows, 'dead')));
        $this->assertSame(10.0, $rows[1]['at'] - $rows[0]['at']);
    }

    public function testTasksAndPurgeRefuseBadArguments(): void
    {
        Engine::defer('/w.php', 't', [], ['delay' => 60]);
        $before = $this->snapshot();
        foreach ([
            fn () => Engine::tasks('finished'),
            fn () => Engine::tasks('dead', 0),
            fn () => Engine::tasks('dead', 1001),
            fn () => Engine::purge(-1),
            fn () => Engine::purge(NAN, true),
            fn () => Engine::history(0),
            fn () => Engine::history(60, -1),
            fn () => Engine::history(2000, 1),
            fn () => Engine::history(INF),
        ] as $i => $call) {
            try {
                $call();
                $this->fail("call $i was accepted");
            } catch (InvalidTask $e) {
                $this->assertMatchesRegularExpression('/state must be one of|limit must be between 1 and 1000|olderThan must be|seconds must be|bucket must be|at most 1000 intervals/', $e->getMessage());
            }
        }
        $this->assertSame($before, $this->snapshot());
    }

    public function testCancelGivesUpOnADeadTaskButNotARunningOne(): void
    {
        $id = Engine::defer('/w.php', 't', [], ['max_attempts' => 1]);
        $this->arriveNext();
        $task = Engine::accept();
        $this->assertFalse(Engine::cancel($id), 'running');
        $task->fail('hopeless');
        $this->assertTrue(Engine::cancel($id), 'dead');
        $record = Engine::status($id);
        $this->assertSame(['cancelled', 'hopeless'], [$record['state'], $record['last_error']]);
        $this->assertFalse(Engine::retry($id));
        $this->assertSame([], Engine::tasks('dead'));
        $this->assertSame(1, Engine::purge(), 'purged with the cancelled tasks');
    }

    public function testFailWithRetryInThenDeadThenRetry(): void
    {
        $id = Engine::defer('/w.php', 't', [], ['max_attempts' => 2]);
        $this->arriveNext();
        Engine::accept()->fail('first', 0.1);
        $this->assertSame('queued', Engine::status($id)['state']);
        $this->assertNull(Engine::accept(), 'not due for 0.1 s');
        usleep(150000);
        $task = Engine::accept();
        $this->assertSame(2, $task->attempt);
        $task->fail('second');
        $dead = Engine::status($id);
        $this->assertSame(['dead', 'second', 2], [$dead['state'], $dead['last_error'], $dead['attempt']]);
        $this->assertSame(1, Engine::stats()['dead']);
        $this->assertTrue(Engine::retry($id));
        $revived = Engine::status($id);
        $this->assertSame(['queued', 0], [$revived['state'], $revived['attempt']]);
        $this->assertFalse(Engine::retry($id));
    }

    public function testFailRefusesBadTextWithInvalidTaskAndKeepsTheTask(): void
    {
        $id = Engine::defer('/w.php', 't');
        $this->arriveNext();
        $task = Engine::accept();
        foreach (["\xc3\x28" => 'is not valid UTF-8', "a\0b" => 'contains a NUL byte',
            str_repeat('e', 2 * 1024 * 1024) => 'bytes long; the limit is'] as $error => $message) {
            $before = $this->snapshot();
            try {
                $task->fail($error);
                $this->fail('no exception');
            } catch (InvalidTask $e) {
                $this->assertStringContainsString($message, $e->getMessage());
            }
            $this->assertSame($before, $this->snapshot());
        }
        $this->assertSame('running', Engine::status($id)['state']);
        $task->complete();
    }

    public function testADeadTaskIsLoggedThroughPhpsErrorLogUnlessLoggingIsOff(): void
    {
        $log = $this->dir . '/php-error.log';
        ini_set('error_log', $log);
        try {
            $id = Engine::defer('/w.php', 't', [], ['max_attempts' => 1]);
            $this->arriveNext();
            Engine::accept()->fail("card\ndeclined");
            $this->assertStringMatchesFormat(
                "[%s UTC] async_engine: task $id at /w.php is dead after 1 attempt(s): card\\ndeclined\n",
                (string) file_get_contents($log),
                'one line, with the task id, endpoint and reason'
            );
            Engine::configure(['log' => 'off']);
            $quiet = Engine::defer('/w.php', 't', [], ['max_attempts' => 1]);
            // This request runs /w.php's tasks: defer() sent no request,
            // and accept() claims the task from the same slot.
            $this->assertSame([], $this->sentSlots());
            Engine::accept()->fail('again');
            $this->assertStringNotContainsString($quiet, (string) file_get_contents($log));
        } finally {
            ini_set('error_log', ASYNC_ENGINE_TEST_ERROR_LOG);
        }
    }

    public function testExtendLengthensTheLeaseAndFinishedTasksRefuseMore(): void
    {
        $id = Engine::defer('/w.php', 't', [], ['timeout' => 5]);
        $this->arriveNext();
        $task = Engine::accept();
        $task->extend(600);
        $this->assertEqualsWithDelta(microtime(true) + 600, Engine::status($id)['lease_until'], 2);
        try {
            $task->extend(-1);
            $this->fail('negative extend');
        } catch (InvalidTask $e) {
            $this->assertStringContainsString('seconds must be a number of seconds greater than 0', $e->getMessage());
        }
        $task->complete();
        $this->expectException(EngineException::class);
        $this->expectExceptionMessage("is not held by this request any more (it is done");
        $task->complete();
    }

    public function testServeRefusesBadHandlersAndOptions(): void
    {
        foreach ([
            [['t' => 'no_such_function'], [], "handler for task 't' is string, not a callable"],
            [['t' => 42], [], "handler for task 't' is int"],
            [[], ['batch_time' => 0], "option 'batch_time' must be a number of seconds greater than 0"],
            [[], ['max_tasks' => 0], "option 'max_tasks' must be an integer of 1 or more"],
            [[], ['bogus' => 1], "unknown option 'bogus' for serve()"],
        ] as [$handlers, $options, $message]) {
            try {
                Engine::serve($handlers, $options);
                $this->fail('no exception');
            } catch (InvalidTask $e) {
                $this->assertStringContainsString($message, $e->getMessage());
            }
        }
    }

    public function testServeWithoutASignedRequestIsRejected(): void
    {
        $this->expectException(RequestRejected::class);
        Engine::serve(['t' => fn () => null]);
    }

    public function testKickReapsExpiredLeasesAndRedispatches(): void
    {
        $id = Engine::defer('/w.php', 't', [], ['timeout' => 0.1]);
        $this->arriveNext();
        $this->assertNotNull(Engine::accept(), 'the task is claimed: ' . json_encode($this->snapshot()));
        // This request "dies": no complete(). Forget it by starting a new process.
        usleep(300000); // past the 0.1 s lease
        [$code, $out, $err] = $this->runPhp('<?php echo AsyncEngine\Engine::kick();');
        $this->assertSame(0, $code, $err);
        $status = Engine::status($id);
        $this->assertSame('queued', $status['state']);
        $this->assertStringContainsString('lease expired: no complete() or fail() within 0.1 s', $status['last_error']);
    }

    public function testServeLetsGoOfATaskWhoseLeaseExpiredWhileItsHandlerRan(): void
    {
        $id = Engine::defer('/w.php', 'slow', [], ['timeout' => 0.1]);
        $this->arriveNext();
        $ran = Engine::serve(['slow' => function () {
            usleep(300000); // past the 0.1 s lease: another process reaps it meanwhile
            [$code, $out, $err] = $this->runPhp('<?php echo AsyncEngine\Engine::kick();');
            $this->assertSame(0, $code, $err);
        }]);
        // The handler returned, but the task is no longer this request's to
        // complete: serve() goes on without an error and the retry decides.
        $this->assertSame(1, $ran);
        $status = Engine::status($id);
        $this->assertSame(['queued', 1], [$status['state'], $status['attempt']]);
        $this->assertStringContainsString('lease expired', $status['last_error']);
    }
}
