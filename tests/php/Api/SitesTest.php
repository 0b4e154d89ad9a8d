<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Api;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\EngineTestCase;
use AsyncEngine\Tests\Support\Servers\NginxFpm;
use AsyncEngine\Tests\Support\Servers\WebServer;

/**
 * Two sites (two nginx virtual hosts on one php-fpm pool) share one
 * database, with the same endpoint and task names: each runs only its own
 * tasks, on its own host, and sees only its own.
 */
final class SitesTest extends EngineTestCase
{
    public function testTwoVirtualHostsOnOneDatabaseNeverRunEachOthersTasks(): void
    {
        $server = new NginxFpm($this->db, self::SECRET, $this->dir);
        $server->phpValues = ['async_engine.site' => 'a'];
        $portB = WebServer::freePort();
        $server->vhosts = [$portB => ['async_engine.site' => 'b']];
        $server->start();
        $effects = $this->dir . '/effects.txt';
        try {
            $ids = [];
            foreach (['a' => $server->port, 'b' => $portB] as $site => $port) {
                for ($page = 0; $page < 3; $page++) {
                    $query = http_build_query(['n' => 20, 'prefix' => "$site$page", 'where' => 1, 'file' => $effects]);
                    $body = (string) file_get_contents("http://127.0.0.1:$port/defer.php?$query");
                    $ids[$site] = array_merge($ids[$site] ?? [], json_decode($body, true) ?? []);
                }
            }
            $this->assertCount(60, $ids['a'], $server->log());
            $this->assertCount(60, $ids['b']);
            $deadline = microtime(true) + 60;
            do {
                usleep(100000);
                $lines = is_file($effects) ? file($effects, FILE_IGNORE_NEW_LINES) : [];
            } while (count($lines) < 120 && microtime(true) < $deadline);
            $this->assertCount(120, $lines, $server->log());
            foreach ($lines as $line) {
                // "a0 7 @PORT deferred started": a site's task ran on that site's host.
                preg_match('/^([ab])\d+ \d+ @(\d+) /', $line, $m);
                $this->assertSame($m[1] === 'a' ? $server->port : $portB, (int) $m[2], $line);
            }
            foreach (['a' => 'b', 'b' => 'a'] as $site => $other) {
                Engine::configure(['site' => $site]);
                $stats = Engine::stats();
                $this->assertSame([60, 0, 0], [$stats['done'], $stats['queued'], $stats['dead']], "site $site");
                $this->assertSame('done', Engine::status($ids[$site][0])['state']);
                $this->assertNull(Engine::status($ids[$other][0]), "site $site does not see $other's task");
                $this->assertFalse(Engine::cancel($ids[$other][0]));
            }
            Engine::configure(['site' => null]);
            $this->assertSame(0, Engine::stats()['done'], 'the unnamed site has no tasks');
        } finally {
            $server->stop();
        }
    }
}
