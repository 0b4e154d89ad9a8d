<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Dispatch;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\EngineTestCase;
use AsyncEngine\Tests\Support\Servers\PhpServer;

/**
 * Deliveries that fail (a wrong base URL, an endpoint that redirects or
 * never calls accept()) back their endpoint off: the tasks stay queued with
 * their attempts untouched, and the failure shows in stats() and the error log.
 */
final class DeliveryFailureTest extends EngineTestCase
{
    /** Waits (bounded) until stats() reports at least $failures failed deliveries to $endpoint. */
    private function waitForFailures(string $endpoint, int $failures, float $seconds = 10): array
    {
        $deadline = microtime(true) + $seconds;
        do {
            foreach (Engine::stats()['failing_endpoints'] as $f) {
                if ($f['endpoint'] === $endpoint && $f['failures'] >= $failures) {
                    return $f;
                }
            }
            usleep(20000);
            Engine::kick(); // this CLI process has no timer: kick retries when the backoff ends
        } while (microtime(true) < $deadline);
        $this->fail("no $failures failed deliveries to $endpoint: " . json_encode(Engine::stats()));
    }

    public function testAHostThatDoesNotResolveBacksTheEndpointOffAndSpendsNoAttempt(): void
    {
        Engine::configure(['base_url' => 'http://no-such-host.invalid']);
        $id = Engine::defer('/worker.php', 't', [], ['max_attempts' => 1]);
        $f = $this->waitForFailures('/worker.php', 1);
        $this->assertStringContainsString('request to http://no-such-host.invalid/worker.php', $f['last_error']);
        $this->assertGreaterThan(microtime(true), $f['retry_at']);
        $status = Engine::status($id);
        $this->assertSame(['queued', 0, null], [$status['state'], $status['attempt'], $status['last_error']]);
        $this->assertSame(0, Engine::stats()['in_flight'], 'the slot was freed');
        $this->assertMatchesRegularExpression(
            '~^\[\d\d-\w{3}-\d{4} [\d:]{8} UTC\] async_engine: delivery to /worker\.php failed \(1 in a row; tasks stay queued, next try in 1 s\): request to http://no-such-host\.invalid/worker\.php~m',
            (string) file_get_contents(ASYNC_ENGINE_TEST_ERROR_LOG)
        );
    }

    public function testARedirectingOrSilentEndpointKillsNoTask(): void
    {
        $server = new PhpServer($this->db, self::SECRET, $this->dir);
        $server->start();
        try {
            // An endpoint that redirects, and a page that answers without calling accept().
            Engine::configure(['base_url' => $server->url()]);
            $ids = [];
            for ($i = 0; $i < 5; $i++) {
                $ids[] = Engine::defer('/hello.php', 't', [], ['max_attempts' => 2]);
                $ids[] = Engine::defer('/redirect.php', 't', [], ['max_attempts' => 2]);
            }
            $f = $this->waitForFailures('/hello.php', 3, 15);
            $this->assertStringContainsString('/hello.php answered HTTP 200 without calling accept()', $f['last_error']);
            $f = $this->waitForFailures('/redirect.php', 3, 15);
            $this->assertStringContainsString('/redirect.php answered HTTP 302', $f['last_error']);
            foreach ($ids as $id) {
                $this->assertSame(['queued', 0], [Engine::status($id)['state'], Engine::status($id)['attempt']], 'no task died');
            }
            $this->assertSame(0, Engine::stats()['dead']);
        } finally {
            $server->stop();
        }
    }

    public function testDeliveryGapsGrow(): void
    {
        Engine::configure(['base_url' => 'http://127.0.0.1:1']);
        Engine::defer('/w.php', 't');
        $times = [];
        $last = 0;
        $deadline = microtime(true) + 12;
        while (count($times) < 3 && microtime(true) < $deadline) {
            foreach (Engine::stats()['failing_endpoints'] as $f) {
                if ($f['failures'] > $last) {
                    $last = $f['failures'];
                    $times[] = $f['retry_at'];
                }
            }
            Engine::kick();
            usleep(20000);
        }
        $this->assertCount(3, $times, 'three failed deliveries');
        $this->assertGreaterThan($times[1] - $times[0], $times[2] - $times[1], 'each wait is longer than the one before');
    }
}
