<?php

declare(strict_types=1);

namespace AsyncEngine\Chaos;

use AsyncEngine\Tests\Support\Database;

/**
 * The PostgreSQL cluster the run's PostgreSQL scenarios use: tests/chaos/run
 * starts a throwaway one (tests/pg/cluster) and names it in
 * ASYNC_CHAOS_PG (admin URL) and ASYNC_CHAOS_PG_DIR (its directory).
 */
final class Pg
{
    /** The cluster's admin URL, or null when the run has none. */
    public static function admin(): ?string
    {
        $url = getenv('ASYNC_CHAOS_PG');
        return $url === false || $url === '' ? null : $url;
    }

    /** The URL of $database on the cluster. */
    public static function url(string $database): string
    {
        return Database::named((string) self::admin(), $database);
    }

    /** A PDO connection to the cluster's admin database. */
    public static function pdo(): \PDO
    {
        return Database::open((string) self::admin());
    }

    /** Restarts the cluster (fast shutdown: every session is cut off). */
    public static function restart(): void
    {
        Lab::run([dirname(__DIR__, 2) . '/pg/cluster', 'restart', (string) getenv('ASYNC_CHAOS_PG_DIR')]);
    }
}
