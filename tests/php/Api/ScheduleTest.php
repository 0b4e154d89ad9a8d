<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Api;

use AsyncEngine\Engine;
use AsyncEngine\InvalidTask;
use AsyncEngine\Tests\Support\EngineTestCase;
use AsyncEngine\Tests\Support\ScheduleAssertions;
use AsyncEngine\Tests\Support\Servers\NginxFpm;

/**
 * Recurring schedules through nginx + php-fpm (pm static, 4 workers), with
 * no crontab and no traffic: a long run of one-second occurrences, a worker
 * killed mid-run, and the whole server down across several occurrences.
 */
final class ScheduleTest extends EngineTestCase
{
    use ScheduleAssertions;

    protected function serversLog(): string
    {
        return $this->server->log();
    }

    private NginxFpm $server;
    private string $effects;

    protected function setUp(): void
    {
        parent::setUp();
        $this->effects = $this->dir . '/effects.txt';
        $this->server = new NginxFpm($this->db, self::SECRET, $this->dir);
        $this->server->start();
        $this->baseUrl = $this->server->url();
        Engine::configure(['base_url' => $this->baseUrl]);
        // Every worker has served the engine once (as any site's pages do).
        for ($i = 0; $i < 8; $i++) {
            $this->server->request('/defer.php?n=0');
        }
    }

    protected function tearDown(): void
    {
        $this->server->stop();
        parent::tearDown();
    }

    private function schedule(string $name, string $when, array $args = [], array $options = []): array
    {
        return Engine::schedule($name, $when, '/worker.php', 'occurrence', $args + ['file' => $this->effects], $options);
    }

    public function testTwentyOccurrencesOfACronExpressionRunOnTimeOnceEach(): void
    {
        $this->schedule('seconds', '* * * * * *');
        usleep(21500000); // no requests, no kick, no cron
        Engine::unschedule('seconds');
        $runs = array_slice($this->occurrences(), 0, 20);
        $late = $this->assertOnTimeOccurrences($runs, 1.0, 20);
        foreach ($runs as [, $at]) {
            $this->assertSame(0.0, fmod($at, 1.0), 'a cron second is a whole second');
        }
        $info = array_column(Engine::schedules(), null, 'name');
        $this->assertArrayNotHasKey('seconds', $info);
        fwrite(STDERR, sprintf("\n[ScheduleTest] %d occurrences of * * * * * *, duplicates 0, latest start %.0f ms after its time\n", count($this->occurrences()), $late * 1000));
    }

    public function testAWorkerKilledMidRunHasItsRunRetriedAndTheNextOccurrencesStillRun(): void
    {
        // Each run takes 1.5 s the first time; the lease is 3 s.
        $this->schedule('k', '@every 2s', ['sleep' => 1.5], ['timeout' => 3, 'overlap' => true]);
        $deadline = microtime(true) + 5;
        while ($this->occurrences() === [] && microtime(true) < $deadline) {
            usleep(20000);
        }
        $this->assertNotSame([], $this->occurrences(), 'the first occurrence ran' . $this->server->log());
        [, $killedAt, , , $pid] = $this->occurrences()[0];
        posix_kill($pid, SIGKILL);
        usleep(9000000);
        Engine::unschedule('k');
        $runs = $this->occurrences();
        $attempts = [];
        foreach ($runs as [, $at, $attempt]) {
            $key = sprintf('%.3f#%d', $at, $attempt);
            $this->assertArrayNotHasKey($key, $attempts, 'an attempt ran twice: ' . json_encode($runs));
            $attempts[$key] = true;
        }
        // The killed run was retried (attempt 2) after its lease ...
        $this->assertArrayHasKey(sprintf('%.3f#2', $killedAt), $attempts, json_encode($runs));
        // ... and the chain went on: every later occurrence ran, 2 s apart.
        $times = array_values(array_unique(array_column($runs, 1)));
        sort($times);
        $this->assertGreaterThanOrEqual(4, count($times), json_encode($runs));
        foreach ($times as $i => $at) {
            $this->assertSame(round($killedAt + 2 * $i, 3), round($at, 3), 'no occurrence missing: ' . json_encode($runs));
        }
    }

    public function testAfterTheServerWasDownCatchUpDecidesOnTheFirstKick(): void
    {
        $this->schedule('one', '@every 1s');
        $this->schedule('none', '@every 1s', [], ['catch_up' => 'none']);
        usleep(2500000);
        // Stop just after both have run an occurrence: the next ones are a
        // second away, so no request is on its way as the server goes. (A
        // request lost on its way hides its endpoint until its slot
        // expires, 60 s, and a kick then finds nothing to send.)
        $this->waitForAnotherOccurrenceOf(['one', 'none'], 3.0);
        usleep(100000);
        $port = (int) parse_url($this->baseUrl, PHP_URL_PORT);
        $downFrom = microtime(true);
        $this->server->stop();
        usleep(4000000); // about four occurrences of each pass with nothing running
        $downUntil = microtime(true);
        $this->server = new NginxFpm($this->db, self::SECRET, $this->dir, $port);
        $this->server->start();
        $this->assertGreaterThan(0, Engine::kick(), 'the kick sends the missed occurrences: '
            . json_encode(Engine::stats()) . $this->server->log());
        usleep(3000000);
        Engine::unschedule('one');
        Engine::unschedule('none');
        // The occurrences due while the server stopped or was down: one
        // that came as stop() began may have run before the workers went.
        // The others were missed, and only the restart could run them.
        $missed = ['one' => [], 'none' => []];
        foreach ($this->occurrences() as [$name, $at, , $started]) {
            if ($at > $downFrom && $at < $downUntil) {
                $this->assertTrue($started < $at + 1 || $started > $downUntil, 'nothing ran while the server was down');
                if ($started > $downUntil) {
                    $missed[$name][] = $at;
                }
            }
        }
        // catch_up one: the missed occurrences ran once, after the restart.
        $this->assertCount(1, $missed['one'], json_encode($this->occurrences()));
        // catch_up none: they were skipped, and recorded as such.
        $this->assertSame([], $missed['none'], json_encode($this->occurrences()));
        $skipped = array_filter(Engine::tasks('cancelled'), fn ($t) => $t['schedule'] === 'none');
        $this->assertNotEmpty($skipped);
        $this->assertStringContainsString("catch_up is 'none'", reset($skipped)['last_error']);
        // Both went on after the restart without further kicks.
        foreach (['one', 'none'] as $name) {
            $after = array_filter($this->occurrences(), fn ($r) => $r[0] === $name && $r[1] > $downUntil);
            $this->assertGreaterThanOrEqual(2, count($after), "$name went on: " . json_encode($this->occurrences()));
        }
    }

    /** Waits until each of $names has run one more occurrence (at most $seconds). */
    private function waitForAnotherOccurrenceOf(array $names, float $seconds): void
    {
        $counts = fn (): array => array_count_values(array_column($this->occurrences(), 0));
        $before = $counts();
        $deadline = microtime(true) + $seconds;
        do {
            usleep(10000);
            $now = $counts();
            $ran = array_filter($names, fn ($name) => ($now[$name] ?? 0) > ($before[$name] ?? 0));
        } while (count($ran) < count($names) && microtime(true) < $deadline);
        $this->assertCount(count($names), $ran, 'each schedule ran another occurrence: ' . json_encode($this->occurrences()));
    }

    public function testManyProcessesSchedulingAtOnceLeaveOneScheduleAndOnePendingOccurrence(): void
    {
        $script = $this->dir . '/schedule-many.php';
        file_put_contents($script, '<?php for ($i = 0; $i < 25; $i++) { AsyncEngine\Engine::schedule("same", "@hourly", "/worker.php", "occurrence", ["n" => $i % 2]); }');
        $procs = [];
        for ($p = 0; $p < 8; $p++) {
            $procs[] = proc_open([PHP_BINARY, '-d', "async_engine.database=$this->db", '-d', 'async_engine.secret=' . self::SECRET, $script],
                [1 => ['pipe', 'w'], 2 => ['redirect', 1]], $pipes[$p]);
        }
        foreach ($procs as $p => $proc) {
            $out = stream_get_contents($pipes[$p][1]);
            $this->assertSame(0, proc_close($proc), $out);
        }
        $this->assertSame(['same'], array_column(Engine::schedules(), 'name'));
        $pending = array_filter(Engine::tasks('queued'), fn (array $t): bool => $t['schedule'] === 'same');
        $this->assertCount(1, $pending, json_encode(Engine::tasks('queued')));
    }

    public function testBadSchedulesAreRefusedWithWhatIsWrongAndStoreNothing(): void
    {
        $cases = [
            ['x', '* * * *', [], "a cron expression has 5 fields"],
            ['x', '*/0 * * * *', [], "minute step '0'"],
            ['x', '@every 0s', [], 'no time at all'],
            ['x', '@hourly', ['timezone' => 'Mars/Olympus'], "timezone 'Mars/Olympus' is not a known IANA time zone"],
            ['x', '@hourly', ['catch_up' => 'all'], "option 'catch_up' must be 'one'"],
            ['x', '@hourly', ['repeat' => 3], "unknown option 'repeat'"],
            ['', '@hourly', [], 'schedule name is empty'],
            [str_repeat('n', 201), '@hourly', [], 'the limit is 200'],
        ];
        foreach ($cases as [$name, $when, $options, $message]) {
            try {
                Engine::schedule($name, $when, '/worker.php', 'occurrence', [], $options);
                $this->fail("accepted: $when " . json_encode($options));
            } catch (InvalidTask $e) {
                $this->assertStringContainsString($message, $e->getMessage());
            }
        }
        $this->assertSame([], Engine::schedules());
        $this->assertSame(0, Engine::stats()['queued']);
    }
}
