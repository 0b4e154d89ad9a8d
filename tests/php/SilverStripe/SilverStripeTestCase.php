<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\SilverStripe;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\Servers\WebServer;
use PHPUnit\Framework\TestCase;

/**
 * One SilverStripe project per test class, served by the web server the
 * subclass names; the engine runs on the module's defaults (database in the
 * project, generated secret, base URL from the request or SS_BASE_URL).
 */
abstract class SilverStripeTestCase extends TestCase
{
    protected static ?Site $site = null;
    protected static ?WebServer $server = null;
    private static string $logs;

    /** SS_MODULES of the project. */
    protected static function modules(): string
    {
        return 'crontask queuedjobs';
    }

    /** The server, not started, serving the project's public/ on `$port`. */
    abstract protected static function newServer(string $logs, int $port): WebServer;

    public static function setUpBeforeClass(): void
    {
        $port = WebServer::freePort();
        self::$site = Site::create(static::modules(), "http://127.0.0.1:$port");
        self::$logs = self::$site->dir . '/server-logs';
        mkdir(self::$logs);
        self::$server = static::newServer(self::$logs, $port)->site(self::$site->dir . '/public', 'index.php');
        self::$server->start();
    }

    public static function tearDownAfterClass(): void
    {
        self::$server?->stop();
        self::$server = null;
        self::$site?->remove();
        self::$site = null;
    }

    protected function setUp(): void
    {
        // This test process reads the module's engine database, and sends nothing.
        Engine::configure(['database' => self::$site->engineDatabase()]);
    }

    protected function tearDown(): void
    {
        Engine::configure(['database' => null]);
    }

    /** GETs a path of the site; asserts 200 and returns the body. */
    protected function page(string $path): string
    {
        [$status, $body] = self::$server->request($path);
        $this->assertSame(200, $status, "$path: $body\n" . self::$server->log());
        return trim($body);
    }

    /** Waits (bounded) until the task is in `$state`; returns its record. */
    protected function waitForState(string $id, string $state, float $seconds = 15, string $context = ''): array
    {
        $deadline = microtime(true) + $seconds;
        do {
            $task = Engine::status($id);
            if (($task['state'] ?? null) === $state) {
                return $task;
            }
            usleep(50000);
        } while (microtime(true) < $deadline);
        $this->fail("task $id is not $state after $seconds s: " . json_encode($task) . "\nstats: "
            . json_encode(Engine::stats()) . "\n$context\n" . self::$server->log());
    }
}
