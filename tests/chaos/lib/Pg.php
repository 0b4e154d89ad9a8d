<?php

declare(strict_types=1);

namespace AsyncEngine\Chaos;

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
        return (string) preg_replace('~/[^/]*$~', "/$database", (string) self::admin());
    }

    /** A PDO connection to a postgres:// URL (the cluster's admin database by default). */
    public static function pdo(?string $url = null): \PDO
    {
        $u = parse_url($url ?? (string) self::admin());
        $pdo = new \PDO(sprintf('pgsql:host=%s;port=%d;dbname=%s', $u['host'], $u['port'], ltrim($u['path'], '/')),
            urldecode($u['user']), urldecode($u['pass']));
        $pdo->setAttribute(\PDO::ATTR_ERRMODE, \PDO::ERRMODE_EXCEPTION);
        return $pdo;
    }

    /** Restarts the cluster (fast shutdown: every session is cut off). */
    public static function restart(): void
    {
        Lab::run([dirname(__DIR__, 2) . '/pg/cluster', 'restart', (string) getenv('ASYNC_CHAOS_PG_DIR')]);
    }
}
