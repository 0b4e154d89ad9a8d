<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Dispatch;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\DispatchTestCase;
use AsyncEngine\Tests\Support\Servers\NginxFpm;
use AsyncEngine\Tests\Support\Servers\WebServer;

/** Dispatch through nginx + php-fpm, pm static (4 workers). */
class NginxFpmDispatchTest extends DispatchTestCase
{
    protected function pm(): string
    {
        return 'static';
    }

    protected function newServer(?int $port = null): WebServer
    {
        return new NginxFpm($this->db, self::SECRET, $this->dir, $port, $this->pm());
    }

    public function testAWorkerKilledMidTaskHasItsTaskRetriedAtOnceNotAfterItsLease(): void
    {
        $id = Engine::defer('/worker.php', 'append',
            ['file' => $this->effects, 'line' => 'slow', 'sleep' => 3, 'deferred_at' => 0], ['timeout' => 120]);
        $deadline = microtime(true) + 5;
        while (Engine::status($id)['state'] !== 'running' && microtime(true) < $deadline) {
            usleep(20000);
        }
        $this->assertSame('running', Engine::status($id)['state']);
        // Kill -9 the fpm worker running it: the one asleep in the task's usleep().
        usleep(300000);
        $killed = 0;
        foreach ($this->server->workerPids() as $pid) {
            if ($this->busy($pid)) {
                posix_kill($pid, SIGKILL);
                $killed++;
            }
        }
        $this->assertSame(1, $killed, 'one worker was running the task');
        $killedAt = microtime(true);
        // Another worker's poll finds the slot's process gone: the task fails
        // and retries (3 s) well within its 120-s lease.
        $this->waitUntilSettled(30);
        $status = Engine::status($id);
        $this->assertSame('done', $status['state'], json_encode($status) . $this->server->log());
        $this->assertSame(2, $status['attempt']);
        $this->assertStringContainsString('died', (string) $status['last_error']);
        $this->assertStringContainsString('process', (string) $status['last_error']);
        fwrite(STDERR, sprintf("\n[%s] a killed worker's task done %.1f s after the kill (lease 120 s)\n",
            static::class, microtime(true) - $killedAt));
    }

    /** Whether an fpm worker is in the middle of a request (sleeping in nanosleep, i.e. the task). */
    private function busy(int $pid): bool
    {
        $syscall = trim((string) @file_get_contents("/proc/$pid/syscall"));
        return str_starts_with($syscall, '230 ') || str_starts_with($syscall, '35 '); // clock_nanosleep / nanosleep
    }

    public function testRestartingFpmWhileTasksAreQueuedLosesNone(): void
    {
        // A short lease: tasks cut off by the restart (fpm kills busy workers
        // without a shutdown) wait out their lease before the retry.
        $ids = $this->deferFromPage(['n' => 100, 'sleep' => 0.01, 'timeout' => 3]);
        $ids = array_merge($ids, $this->deferFromPage(['n' => 100, 'sleep' => 0.01, 'prefix' => 'more', 'timeout' => 3]));
        $this->server->restartFpm();
        // Kick as cron would (the new workers have no timers yet).
        $deadline = microtime(true) + 90;
        do {
            usleep(500000);
            Engine::kick();
            $stats = Engine::stats();
        } while ($stats['queued'] + $stats['running'] > 0 && microtime(true) < $deadline);
        $this->assertSame(200, $stats['done'], json_encode($stats) . $this->server->log());
        // Every task ran. Delivery is at-least-once: a worker killed after the
        // task's effect but before its completion was recorded runs it again,
        // so a line may appear twice, but only for a task that was retried.
        $runs = array_count_values(array_map(
            fn (string $line) => implode(' ', array_slice(explode(' ', $line), 0, 2)),
            file($this->effects, FILE_IGNORE_NEW_LINES)
        ));
        $this->assertCount(200, $runs);
        foreach ($runs as $line => $count) {
            [$prefix, $i] = explode(' ', $line);
            $status = Engine::status($ids[($prefix === 'more' ? 100 : 0) + (int) $i]);
            $this->assertLessThanOrEqual($status['attempt'], $count, "'$line' ran more often than it was attempted");
        }
    }
}
