<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Api;

use AsyncEngine\Engine;
use AsyncEngine\StorageError;
use AsyncEngine\Tests\Support\EngineTestCase;

/** SQLite's files, locks and permissions (PostgresTest covers PostgreSQL's). */
final class StorageTest extends EngineTestCase
{
    protected function setUp(): void
    {
        parent::setUp();
        $this->requireSqlite('these tests are about database files');
    }

    private function assertStorageError(string $message, callable $call): void
    {
        try {
            $call();
            $this->fail('no StorageError');
        } catch (StorageError $e) {
            $this->assertStringContainsString($message, $e->getMessage());
        }
    }

    public function testAMissingDirectoryIsNamed(): void
    {
        Engine::configure(['database' => $this->dir . '/missing/engine.sqlite']);
        $this->assertStorageError("database directory '{$this->dir}/missing' does not exist", fn () => Engine::defer('/w.php', 't'));
        $this->assertDirectoryDoesNotExist($this->dir . '/missing');
    }

    public function testAFileThatIsNotSqliteIsRefusedAndLeftAlone(): void
    {
        $garbage = str_repeat("not a database\n", 300);
        file_put_contents($this->db, $garbage);
        $this->assertStorageError("database '{$this->db}' is not a SQLite database", fn () => Engine::defer('/w.php', 't'));
        $this->assertStorageError('is not a SQLite database', fn () => Engine::stats());
        $this->assertSame($garbage, file_get_contents($this->db));
    }

    public function testPhpInfoReportsTheSchemaVersionANewDatabaseGets(): void
    {
        Engine::stats();
        $version = $this->pdo()->query('PRAGMA user_version')->fetchColumn();
        $this->assertGreaterThan(0, (int) $version);
        $this->assertStringContainsString("SQLite schema version => $version\n", self::moduleInfo());
    }

    public function testAFutureSchemaIsRefused(): void
    {
        Engine::stats();
        $this->pdo()->exec('PRAGMA user_version = 42');
        // A new process opens it (this one keeps its connection).
        [$code, $out] = $this->runPhp('<?php try { AsyncEngine\Engine::stats(); } catch (AsyncEngine\StorageError $e) { echo $e->getMessage(); }');
        $this->assertStringContainsString('has schema version 42, newer than this extension supports', $out);
    }

    public function testALockHeldPastTheBusyTimeoutIsAStorageErrorAndChangesNothing(): void
    {
        Engine::configure(['busy_timeout' => 0.3]);
        Engine::defer('/w.php', 'before');
        $before = $this->snapshot();
        $holder = $this->pdo();
        $holder->exec('BEGIN IMMEDIATE');
        $naps = Engine::stats()['busy_naps'];
        $started = microtime(true);
        $this->assertStorageError('is locked by another writer for longer than the busy timeout (0.3 s; setting busy_timeout)',
            fn () => Engine::defer('/w.php', 'blocked'));
        $this->assertGreaterThanOrEqual(0.25, microtime(true) - $started);
        $this->assertGreaterThan($naps + 100, Engine::stats()['busy_naps'], 'the waits are counted');
        $holder->exec('ROLLBACK');
        $this->assertSame($before, $this->snapshot());
        Engine::defer('/w.php', 'after');
        $this->assertSame(2, Engine::stats()['queued']);
    }

    public function testAnUnwritableDirectoryIsNamed(): void
    {
        $ro = $this->dir . '/readonly';
        mkdir($ro, 0555);
        $code = '<?php AsyncEngine\Engine::configure(["database" => ' . var_export($ro . '/engine.sqlite', true) . ']);'
            . 'try { AsyncEngine\Engine::defer("/w.php", "t"); echo "written"; } catch (AsyncEngine\StorageError $e) { echo $e->getMessage(); }';
        // root may write anywhere: run as nobody then.
        $prefix = posix_geteuid() === 0 ? ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'] : [];
        chmod($this->dir, 0755);
        [$status, $out, $err] = $this->runPhp($code, [], $prefix);
        $this->assertSame(0, $status, $err);
        $this->assertStringContainsString("database directory '$ro' is not writable", $out);
    }

    public function testADatabaseMadeReadOnlyIsRefusedAndNotKeptOpenReadOnly(): void
    {
        // root may write anything: run as nobody then.
        $prefix = posix_geteuid() === 0 ? ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'] : [];
        chmod($this->dir, 0777);
        [$status, , $err] = $this->runPhp('<?php AsyncEngine\Engine::stats();', [], $prefix);
        $this->assertSame(0, $status, $err);
        chmod($this->db, 0444);
        // SQLite opens a file it may not write read-only; such a connection
        // must not be kept for the life of a (web worker) process.
        $code = '<?php try { AsyncEngine\Engine::defer("/w.php", "t"); echo "written while read-only\n"; }'
            . ' catch (AsyncEngine\StorageError $e) { echo $e->getMessage(), "\n"; }'
            . 'chmod(' . var_export($this->db, true) . ', 0644);'
            . 'AsyncEngine\Engine::defer("/w.php", "t"); echo "written\n";';
        [$status, $out, $err] = $this->runPhp($code, [], $prefix);
        $this->assertSame(0, $status, $err . $out);
        $this->assertSame("database '{$this->db}' is read-only (check the permissions of the file and its directory)\nwritten\n", $out);
    }

    public function testADatabaseReplacedOrDeletedUnderAnOpenConnectionIsNotWrittenBehindItsBack(): void
    {
        Engine::defer('/w.php', 'first');
        // Replaced by another file: this process must neither go on writing
        // to the old, unlinked file, where no other process would see the
        // task, nor open the new one beside the old one's live WAL.
        $garbage = str_repeat("not a database\n", 300);
        file_put_contents("$this->db.new", $garbage);
        rename("$this->db.new", $this->db);
        usleep(2000); // a process looks again a millisecond after its last look
        $message = "database '{$this->db}' was replaced or deleted after this process opened it; restart PHP";
        $this->assertStorageError($message, fn () => Engine::defer('/w.php', 'second'));
        $this->assertStorageError($message, fn () => Engine::stats());
        $this->assertSame($garbage, file_get_contents($this->db), 'the file is left alone');
        // Deleted: refused here too, not recreated beside the old WAL.
        unlink($this->db);
        $this->assertStorageError($message, fn () => Engine::defer('/w.php', 'third'));
        $this->assertFileDoesNotExist($this->db);
    }

    /**
     * A script deferring without pause: its commits leave the write-ahead
     * log's checkpoints to the process's background thread when it has one
     * (its first task's request started it), else run them between calls,
     * and either way the log starts over every few thousand pages (the
     * script goes on deferring while the background thread copies them).
     * Never checkpointed, 12,000 tasks would grow it to about 85 MiB (of
     * 2-KiB pages).
     */
    public function testTheWriteAheadLogStartsOverWhileAScriptDefersWithoutPause(): void
    {
        foreach (['background thread' => '[]', 'no background thread' => "['delay' => 3600]"] as $case => $options) {
            $code = <<<PHP
                <?php
                \$largest = 0;
                for (\$i = 0; \$i < 12000; \$i++) {
                    AsyncEngine\\Engine::defer('/w.php', 'task', [], $options);
                    if (\$i % 50 === 0) {
                        clearstatcache();
                        \$largest = max(\$largest, (int) @filesize('{$this->db}-wal'));
                    }
                }
                echo \$largest;
                PHP;
            [$exit, $out, $err] = $this->runPhp($code);
            $this->assertSame(0, $exit, "$case: $err");
            $this->assertLessThan(40 << 20, (int) $out, "$case: the log grew to $out bytes");
        }
        $this->assertSame(24000, Engine::stats()['queued']);
    }
}
