<?php

declare(strict_types=1);

namespace AsyncEngine\Tests;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Servers\PhpServer;

/** Deliveries that fail are recorded on their task, which stays queued for a retry. */
final class DeliveryFailureTest extends EngineTestCase
{
    private function waitForError(string $id): array
    {
        $deadline = microtime(true) + 10;
        do {
            $status = Engine::status($id);
            if ($status['last_error'] !== null) {
                return $status;
            }
            usleep(20000);
        } while (microtime(true) < $deadline);
        return $status;
    }

    public function testAHostThatDoesNotResolveIsRecorded(): void
    {
        Engine::configure(['base_url' => 'http://no-such-host.invalid']);
        $id = Engine::defer('/worker.php', 't');
        $status = $this->waitForError($id);
        $this->assertSame(['queued', 1], [$status['state'], $status['attempt']]);
        $this->assertStringContainsString('request to http://no-such-host.invalid/worker.php', (string) $status['last_error']);
        $this->assertSame(0, Engine::stats()['in_flight'], 'the slot was freed');
    }

    public function testAnEndpointThatNeverCallsAcceptIsRecorded(): void
    {
        $server = new PhpServer($this->db, self::SECRET, $this->dir);
        $server->start();
        try {
            Engine::configure(['base_url' => $server->url()]);
            $id = Engine::defer('/hello.php', 't');
            $status = $this->waitForError($id);
            $this->assertSame(['queued', 1], [$status['state'], $status['attempt']]);
            $this->assertStringContainsString('/hello.php answered HTTP 200 without calling accept()', (string) $status['last_error']);
        } finally {
            $server->stop();
        }
    }
}
