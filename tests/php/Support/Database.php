<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Support;

use PDO;

/**
 * The engine's database reached directly, as another process would: by
 * the tests, the benchmarks and the chaos suite.
 */
final class Database
{
    /**
     * A PDO connection, errors thrown, to the engine's database: a SQLite
     * path (waiting up to 10 s for another writer's lock) or a postgres://
     * URL, whose host may be a percent-encoded Unix socket directory.
     */
    public static function open(string $database): PDO
    {
        if (!str_starts_with($database, 'postgres://')) {
            return new PDO("sqlite:$database", null, null, [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION, PDO::ATTR_TIMEOUT => 10]);
        }
        $u = parse_url($database);
        $pdo = new PDO('pgsql:host=' . rawurldecode($u['host']) . ";port={$u['port']};dbname=" . ltrim($u['path'], '/'),
            rawurldecode($u['user']), rawurldecode($u['pass']));
        $pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
        return $pdo;
    }

    /** A postgres:// URL naming $database instead of its own. */
    public static function named(string $url, string $database): string
    {
        return (string) preg_replace('~/[^/]*$~', "/$database", $url);
    }
}
