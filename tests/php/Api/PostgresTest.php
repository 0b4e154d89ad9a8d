<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Api;

use AsyncEngine\Engine;
use AsyncEngine\StorageError;
use AsyncEngine\Tests\Support\EngineTestCase;
use AsyncEngine\Tests\Support\Servers\WebServer;

/**
 * The PostgreSQL backend seen from PHP: errors that name their cause and
 * change nothing, and the connection made again after the server restarts.
 * Runs in bin/test's PostgreSQL pass (ASYNC_ENGINE_TEST_PG and
 * ASYNC_ENGINE_TEST_PG_DIR, the cluster tests/pg/cluster started).
 */
final class PostgresTest extends EngineTestCase
{
    protected function setUp(): void
    {
        parent::setUp();
        if ($this->pgDatabase === null) {
            $this->markTestSkipped('PostgreSQL only (bin/test runs it in its PostgreSQL pass)');
        }
    }

    /** The admin URL with another user:password and database. */
    private function urlAs(string $userPassword, string $database): string
    {
        $u = parse_url((string) self::pgAdmin());
        return "postgres://$userPassword@{$u['host']}:{$u['port']}/$database";
    }

    private function storageError(string $database): string
    {
        try {
            Engine::configure(['database' => $database]);
            Engine::defer('/w.php', 'never', ['x' => 1]);
        } catch (StorageError $e) {
            return $e->getMessage();
        } finally {
            Engine::configure(['database' => $this->db]);
        }
        $this->fail("no StorageError for $database");
    }

    public function testPhpInfoReportsTheSchemaVersionANewDatabaseGets(): void
    {
        Engine::stats();
        $version = $this->pdo()->query("SELECT value FROM meta WHERE key = 'schema_version'")->fetchColumn();
        $this->assertGreaterThan(0, (int) $version);
        $this->assertStringContainsString("PostgreSQL schema version => $version\n", self::moduleInfo());
    }

    public function testWrongUrlsDownServersRefusedLoginsAndMissingRightsAreStorageErrorsNamingTheCause(): void
    {
        $password = parse_url((string) self::pgAdmin(), PHP_URL_PASS);
        $port = WebServer::freePort();
        $cases = [
            'postgres://u@127.0.0.1:port/db' => 'not a valid PostgreSQL URL',
            "postgres://u:pw@127.0.0.1:$port/db" => 'cannot be reached',
            $this->urlAs('postgres:wrong', $this->pgDatabase) => 'refused the login',
            $this->urlAs("postgres:$password", 'no_such_database') => 'does not exist',
        ];
        foreach ($cases as $url => $why) {
            $message = $this->storageError($url);
            $this->assertStringContainsString($why, $message, $url);
            $this->assertStringNotContainsString((string) $password, $message);
            $this->assertStringNotContainsString('wrong', $message);
        }

        // A user that may connect but not create tables: nothing is half-created.
        $role = 'limited_' . bin2hex(random_bytes(4));
        $admin = self::adminPdo($this->pgDatabase);
        $admin->exec("CREATE ROLE $role LOGIN PASSWORD 'pw'; REVOKE CREATE ON SCHEMA public FROM PUBLIC");
        try {
            $message = $this->storageError($this->urlAs("$role:pw", $this->pgDatabase));
            $this->assertStringContainsString('lack of permission', $message);
            $this->assertStringContainsString('permission denied for schema public', $message);
            $tables = $admin->query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")->fetchColumn();
            $this->assertSame(0, (int) $tables);
        } finally {
            $admin->exec("DROP OWNED BY $role; DROP ROLE $role");
        }

        // The right URL works, and the failed attempts left no task behind.
        $id = Engine::defer('/w.php', 'after', []);
        $this->assertSame(['after'], $this->pdo()->query('SELECT name FROM tasks')->fetchAll(\PDO::FETCH_COLUMN));
        $this->assertSame('queued', Engine::status($id)['state']);
    }

    public function testTheConnectionIsMadeAgainAfterThePostgresServerRestarts(): void
    {
        $dir = getenv('ASYNC_ENGINE_TEST_PG_DIR');
        if ($dir === false || $dir === '') {
            $this->markTestSkipped('ASYNC_ENGINE_TEST_PG_DIR (the test cluster) not set');
        }
        $before = Engine::defer('/w.php', 'before', []);
        exec(escapeshellarg(dirname(__DIR__, 2) . '/pg/cluster') . ' restart ' . escapeshellarg($dir) . ' 2>&1', $out, $code);
        $this->assertSame(0, $code, implode("\n", $out));
        // The same process, the same connection object: the first call after
        // the restart connects again instead of failing.
        $after = Engine::defer('/w.php', 'after', []);
        $this->assertSame('queued', Engine::status($before)['state']);
        $this->assertSame('after', Engine::status($after)['task']);
    }
}
