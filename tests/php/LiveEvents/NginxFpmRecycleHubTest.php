<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\LiveEvents;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\HubTestCase;
use AsyncEngine\Tests\Support\Servers\NginxFpm;
use AsyncEngine\Tests\Support\Servers\WebServer;
use AsyncEngine\Tests\Support\Sse\SseClients;

/**
 * The hub on php-fpm whose workers are recycled (pm static, 4 workers,
 * pm.max_requests = 20), the hub's among them. A worker hosts only once it
 * has served a request, and php-fpm spreads requests evenly, so all four
 * may recycle at once: page views go on while the hub is handed over, as
 * they do on a site whose workers recycle (max_requests counts requests).
 */
final class NginxFpmRecycleHubTest extends HubTestCase
{
    protected function makeServer(): WebServer
    {
        $server = new NginxFpm($this->db, self::SECRET, $this->dir);
        $server->maxRequests = 20;
        return $server;
    }

    public function testARecycledHubWorkerHandsTheHubOverAndSubscribersMissNothing(): void
    {
        $clients = new SseClients($this->hubUrl('?topic=feed'), 5);
        $this->assertTrue($clients->until(fn () => count(Engine::subscribers('feed')) === 5, 10));
        $host = $this->hubPid();
        $published = [Engine::publish('feed', 'before')];
        // Page views until the hub's worker reaches pm.max_requests and exits.
        for ($i = 0; $i < 300 && posix_kill($host, 0) && !$this->isZombie($host); $i++) {
            $this->server->request('/hello.php');
            $clients->pump(0.005);
        }
        $this->assertFalse(posix_kill($host, 0) && !$this->isZombie($host), 'the hub worker was recycled');
        $gone = microtime(true);
        $published[] = Engine::publish('feed', 'while handing over');
        $this->waitForHub(5, function () use ($clients): void {
            $this->server->request('/hello.php');
            $clients->pump(0.02);
        });
        $back = microtime(true) - $gone;
        $published[] = Engine::publish('feed', 'after');
        $this->assertTrue($clients->until(function (SseClients $c): bool {
            foreach ($c->events as $events) {
                if (count($events) < 3) {
                    return false;
                }
            }
            return true;
        }, 10), json_encode($clients->events));
        foreach (array_keys($clients->events) as $i) {
            $this->assertSame($published, $clients->ids($i));
        }
        $this->assertNotSame($host, $this->hubPid());
        fwrite(STDERR, sprintf(
            "\n[%s] the hub's worker recycled after its max_requests: another listened %.2f s after it exited; 5 subscribers reconnected and missed nothing\n",
            self::class, $back
        ));
    }

    private function isZombie(int $pid): bool
    {
        $stat = @file_get_contents("/proc/$pid/stat");
        return $stat === false || preg_match('/^\d+ \(.*\) Z /', $stat) === 1;
    }
}
