<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Api;

use AsyncEngine\Engine;
use AsyncEngine\EngineException;
use AsyncEngine\QueueFull;
use AsyncEngine\Tests\Support\EngineTestCase;

final class DeferTest extends EngineTestCase
{
    public function testDeferStoresTheTaskWithItsArgsAndOptions(): void
    {
        $args = ['to' => 'ann@example.com', 'n' => [1, 2.5, -0.0, null, true, false], 7 => 'seven',
            'nested' => ['é' => ['deep' => 'ü€😀']], 'empty' => [], 'float' => 1.0];
        $before = microtime(true);
        $id = Engine::defer('/worker.php', 'send-mail', $args, ['priority' => 3, 'max_attempts' => 2, 'timeout' => 30]);
        $this->assertMatchesRegularExpression('/^[0-9A-HJKMNP-TV-Z]{26}$/', $id);
        $status = Engine::status($id);
        $this->assertSame($args, $status['args']);
        $this->assertSame('/worker.php', $status['endpoint']);
        $this->assertSame('send-mail', $status['task']);
        $this->assertSame('queued', $status['state']);
        $this->assertSame(3, $status['priority']);
        $this->assertSame(0, $status['attempt']);
        $this->assertSame(2, $status['max_attempts']);
        $this->assertSame(30.0, $status['timeout']);
        $this->assertNull($status['last_error']);
        $this->assertEqualsWithDelta($before, $status['due_at'], 1.0);
        $this->assertSame(['id', 'endpoint', 'task', 'args', 'state', 'priority', 'attempt', 'max_attempts',
            'timeout', 'unique', 'due_at', 'created_at', 'updated_at', 'started_at', 'finished_at',
            'lease_until', 'last_error', 'schedule', 'scheduled_at'], array_keys($status));
        $this->assertSame([null, null], [$status['schedule'], $status['scheduled_at']], 'not an occurrence of a schedule');
        $this->assertNull(Engine::status('01NOSUCHTASK0000000000000'));
    }

    public function testIdsSortByCreationTime(): void
    {
        $ids = [];
        for ($i = 0; $i < 50; $i++) {
            $ids[] = Engine::defer('/w.php', 't', ['i' => $i], ['delay' => 60]);
        }
        $sorted = $ids;
        sort($sorted, SORT_STRING);
        $this->assertSame($ids, $sorted);
    }

    public function testDelayAndAtSetTheDueTime(): void
    {
        $now = microtime(true);
        $delayed = Engine::status(Engine::defer('/w.php', 't', [], ['delay' => 90.5]));
        $this->assertEqualsWithDelta($now + 90.5, $delayed['due_at'], 1.0);
        $at = Engine::status(Engine::defer('/w.php', 't', [], ['at' => 2000000000]));
        $this->assertSame(2000000000.0, $at['due_at']);
        $stats = Engine::stats();
        $this->assertSame(2, $stats['queued']);
        $this->assertSame(0, $stats['in_flight'], 'nothing due: nothing dispatched');
        $this->assertEqualsWithDelta($now + 90.5, $stats['next_due'], 1.0);
        $this->assertNull($stats['oldest_due_age']);
        $this->assertNull($stats['hub'], 'no hub_listen, no hub');
    }

    public function testUniqueReturnsTheLiveTask(): void
    {
        $a = Engine::defer('/w.php', 'report', ['v' => 1], ['unique' => 'report-42']);
        $b = Engine::defer('/w.php', 'report', ['v' => 2], ['unique' => 'report-42']);
        $this->assertSame($a, $b);
        $this->assertSame(['v' => 1], Engine::status($a)['args']);
        $this->assertTrue(Engine::cancel($a));
        $c = Engine::defer('/w.php', 'report', ['v' => 3], ['unique' => 'report-42']);
        $this->assertNotSame($a, $c, 'a cancelled task frees its key');
    }

    public function testDueTasksTakeSlotsUpToMaxWorkers(): void
    {
        Engine::configure(['max_workers' => 2]);
        foreach (['/a.php', '/b.php', '/c.php'] as $endpoint) {
            Engine::defer($endpoint, 't');
        }
        $stats = Engine::stats();
        $this->assertSame(2, $stats['in_flight']);
        $this->assertSame(2, $stats['max_workers']);
        $this->assertSame(3, $stats['queued']);
        $this->assertIsFloat($stats['oldest_due_age']);
        $this->assertCount(2, $this->sentSlots());
    }

    public function testCancelOnlyQueuedTasks(): void
    {
        $id = Engine::defer('/w.php', 't', [], ['delay' => 10]);
        $this->assertTrue(Engine::cancel($id));
        $this->assertSame('cancelled', Engine::status($id)['state']);
        $this->assertNotNull(Engine::status($id)['finished_at']);
        $this->assertFalse(Engine::cancel($id));
        $this->assertFalse(Engine::cancel('unknown'));
        $this->assertFalse(Engine::retry($id), 'only dead tasks are retried');
    }

    public function testSettingsComeFromIniAndConfigureOverridesThem(): void
    {
        [$code, $out, $err] = $this->runPhp(<<<'PHP'
            <?php
            use AsyncEngine\Engine;
            echo Engine::stats()['max_workers'], "\n";
            Engine::configure(['max_workers' => 9]);
            echo Engine::stats()['max_workers'], "\n";
            Engine::configure(['max_workers' => null]);
            echo Engine::stats()['max_workers'], "\n";
            PHP, [], []);
        $this->assertSame(0, $code, $err);
        $this->assertSame("4\n9\n4\n", $out);
        [$code, $out, $err] = $this->runPhp('<?php echo AsyncEngine\Engine::stats()["max_workers"];', [], []);
        $this->assertSame('4', $out, $err);
    }

    public function testIniSetAndIniRestoreTakeEffectOnTheNextCall(): void
    {
        [$code, $out, $err] = $this->runPhp(<<<'PHP'
            <?php
            use AsyncEngine\Engine;
            $workers = fn () => Engine::stats()['max_workers'];
            echo $workers(), ' ';
            ini_set('async_engine.max_workers', '6');
            echo $workers(), ' ';
            ini_restore('async_engine.max_workers');
            echo $workers(), ' ';
            ini_set('async_engine.max_workers', 'lots');
            try {
                $workers();
            } catch (AsyncEngine\EngineException $e) {
                echo get_class($e), ' ';
            }
            ini_set('async_engine.max_workers', '3');
            echo $workers(), ' ';
            Engine::configure(['max_workers' => 8]);
            echo $workers(), ' ';
            ini_set('async_engine.max_workers', '5');
            echo $workers(), "\n";
            PHP, [], []);
        $this->assertSame(0, $code, $err);
        $this->assertSame("4 6 4 AsyncEngine\\EngineException 3 8 8\n", $out);
    }

    public function testIniValuesAreUsed(): void
    {
        $script = $this->dir . '/ini.php';
        file_put_contents($script, '<?php echo json_encode(AsyncEngine\Engine::stats()["max_workers"]);');
        $out = shell_exec(escapeshellarg(PHP_BINARY)
            . ' -d async_engine.max_workers=7 -d async_engine.database=' . escapeshellarg($this->db) . ' ' . escapeshellarg($script));
        $this->assertSame('7', $out);
        $out = shell_exec(escapeshellarg(PHP_BINARY)
            . ' -d async_engine.max_workers=lots -d async_engine.database=' . escapeshellarg($this->db) . ' ' . escapeshellarg($script) . ' 2>&1');
        $this->assertStringContainsString("php.ini async_engine.max_workers: setting 'max_workers' must be an integer", (string) $out);
    }

    public function testWithoutADatabaseSettingNothingIsCreatedAndTheErrorSaysWhatToSet(): void
    {
        $script = $this->dir . '/default.php';
        file_put_contents($script, '<?php try { AsyncEngine\Engine::defer("/w.php", "t"); } '
            . 'catch (AsyncEngine\StorageError $e) { echo $e->getMessage(); }');
        $tmp = $this->dir . '/tmp';
        mkdir($tmp);
        $cmd = 'TMPDIR=' . escapeshellarg($tmp) . ' ' . escapeshellarg(PHP_BINARY) . ' ' . escapeshellarg($script);
        $out = (string) shell_exec($cmd);
        $this->assertStringContainsString('no database is set: set async_engine.database', $out);
        $this->assertSame([], array_values(array_diff(scandir($tmp), ['.', '..'])), 'nothing written to the temp dir');
    }

    public function testAFullQueueThrowsQueueFullAndStoresNothing(): void
    {
        Engine::configure(['max_queued' => 2]);
        Engine::defer('/w.php', 't', [], ['delay' => 60]);
        $kept = Engine::defer('/w.php', 'u', [], ['delay' => 60, 'unique' => 'k']);
        $before = $this->snapshot();
        try {
            Engine::defer('/w.php', 't', [], ['delay' => 60]);
            $this->fail('no QueueFull');
        } catch (QueueFull $e) {
            $this->assertInstanceOf(EngineException::class, $e);
            $this->assertStringContainsString('the queue of /w.php already holds 2 queued tasks, the limit (setting max_queued)',
                $e->getMessage());
        }
        $this->assertSame($before, $this->snapshot(), 'nothing stored');
        $this->assertSame($kept, Engine::defer('/w.php', 'u', [], ['unique' => 'k']), 'a live unique task is still found');
        Engine::defer('/other.php', 't', [], ['delay' => 60]);
        $this->assertSame(3, Engine::stats()['queued']);
    }

    public function testTheDatabaseAndItsCompanionsAreReadableByTheirOwnerOnly(): void
    {
        $this->requireSqlite('file permissions');
        umask(0022);
        Engine::defer('/w.php', 'private', ['card' => '4111'], ['delay' => 60]);
        clearstatcache();
        foreach (['', '-wal', '-shm'] as $suffix) {
            $this->assertFileExists($this->db . $suffix);
            $this->assertSame('600', sprintf('%o', fileperms($this->db . $suffix) & 0777), "engine.sqlite$suffix");
        }
        // A database an earlier release left open to everybody is closed to others.
        $other = $this->dir . '/old.sqlite';
        touch($other);
        chmod($other, 0644);
        Engine::configure(['database' => $other]);
        Engine::stats();
        clearstatcache();
        $this->assertSame('600', sprintf('%o', fileperms($other) & 0777));
        // In a setgid directory (a group the site's users share) the group keeps access.
        mkdir($this->dir . '/shared');
        chmod($this->dir . '/shared', 02770);
        Engine::configure(['database' => $this->dir . '/shared/engine.sqlite']);
        Engine::stats();
        clearstatcache();
        $this->assertSame('660', sprintf('%o', fileperms($this->dir . '/shared/engine.sqlite') & 0777));
    }

    public function testAForkedChildReopensItsOwnConnection(): void
    {
        Engine::defer('/w.php', 'parent-before', [], ['delay' => 60]);
        $pid = pcntl_fork();
        if ($pid === 0) {
            try {
                Engine::defer('/w.php', 'child', [], ['delay' => 60]);
            } finally {
                posix_kill(posix_getpid(), SIGKILL); // skip PHPUnit's shutdown in the child
            }
        }
        pcntl_waitpid($pid, $status);
        Engine::defer('/w.php', 'parent-after', [], ['delay' => 60]);
        $names = $this->pdo()->query('SELECT name FROM tasks ORDER BY id')->fetchAll(\PDO::FETCH_COLUMN);
        $this->assertSame(['parent-before', 'child', 'parent-after'], $names);
    }
}
