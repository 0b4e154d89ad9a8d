<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Packaging;

use AsyncEngine\Tests\Support\Browser\Chromium;
use AsyncEngine\Tests\Support\Servers\WebServer;
use PHPUnit\Framework\TestCase;

/**
 * README's demo command as a person runs it: `bin/demo` starts, a headless
 * Chromium clicks the burst button, the status page (never reloaded by the
 * test) shows the tasks done and the failing ones dead with their error, a
 * dead one is cancelled with its button, and Ctrl-C stops everything.
 * Saves the screenshot README shows (docs/demo.png).
 */
final class DemoTest extends TestCase
{
    /** @var resource|null */
    private $demo = null;
    private string $output;

    protected function setUp(): void
    {
        $this->output = tempnam(sys_get_temp_dir(), 'async-engine-demo-');
    }

    protected function tearDown(): void
    {
        if (is_resource($this->demo)) {
            // bin/demo stops its server on SIGTERM; SIGKILL would leave the server running.
            $group = -proc_get_status($this->demo)['pid'];
            posix_kill($group, SIGTERM);
            $deadline = microtime(true) + 10;
            while (proc_get_status($this->demo)['running'] && microtime(true) < $deadline) {
                usleep(50000);
            }
            posix_kill($group, SIGKILL);
            proc_close($this->demo);
        }
        @unlink($this->output);
    }

    public function testTheDemoRunsTasksTheStatusPageShowsThemAndCtrlCStopsIt(): void
    {
        $root = dirname(__DIR__, 3);
        $port = WebServer::freePort();
        // The hub's port is probed free too: PORT + 1 (the default) has the parity
        // Linux gives outgoing connections, and after the PostgreSQL tests many of
        // those ports are in TIME_WAIT, so the hub could not listen there.
        do {
            $hubPort = WebServer::freePort();
        } while ($hubPort === $port);
        // As in a terminal: PHP's own ini files only (bin/demo loads the build),
        // the demo in its own process group, which Ctrl-C signals as a whole.
        $env = ['PORT' => (string) $port, 'HUB_PORT' => (string) $hubPort,
            'PHP_INI_SCAN_DIR' => PHP_CONFIG_FILE_SCAN_DIR] + getenv();
        $this->demo = proc_open(
            ['setsid', "$root/bin/demo"],
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', $this->output, 'w'], 2 => ['redirect', 1]],
            $pipes,
            $root,
            $env
        );
        $url = $this->waitForOutput('~Demo running: (http://127\.0\.0\.1:\d+/)~', 300)[1];
        $this->assertSame("http://127.0.0.1:$port/", $url);
        $this->assertStringContainsString("live events on 127.0.0.1:$hubPort;", $this->log());
        preg_match('~database in (\S+);~', $this->log(), $m);
        $tmp = $m[1];
        $this->assertFileExists("$tmp/async-engine.sqlite");

        $browser = new Chromium();
        $browser->open($url);
        $this->assertSame('0', $browser->text('[data-count=done]'));
        $browser->click('button[value=burst]');
        $browser->waitFor(fn (Chromium $b) => $b->text('.ae-msg') === 'Deferred 32 tasks.', 10, 'the burst');
        $this->assertMatchesRegularExpression('~^http://127\.0\.0\.1:\d+/\?msg=~', $browser->url(), 'redirected back');

        // 20 fast + 4 slow + 5 delayed by 5 s succeed; 3 fail twice and die.
        $browser->waitFor(
            fn (Chromium $b) => $b->text('[data-count=done]') === '29' && $b->text('[data-count=dead]') === '3'
                && $b->text('[data-count=queued]') === '0' && $b->text('[data-count=running]') === '0',
            60,
            'the status page to show 29 done and 3 dead: ' . $browser->text('.ae-cards')
        );
        $this->assertSame('29', $browser->text('[data-total=done]'), 'the chart counts them');
        // The live feed got what the tasks published, pushed through the hub.
        try {
            $feed = (string) $browser->waitFor(fn (Chromium $b) => $b->count('#live li') >= 8 ? $b->text('#live') : null, 10, 'the live feed');
        } catch (\RuntimeException $e) {
            $this->fail($e->getMessage() . ': ' . json_encode([$browser->text('#live'), $browser->text('.ae-hub')])
                . "\n" . $this->log() . "\n" . @file_get_contents("$tmp/server.log"));
        }
        $this->assertMatchesRegularExpression('~(fast|slow) #\d+ done in \d+ ms~', $feed);
        $this->assertSame(3, $browser->count('.ae-dead-list tr[data-state=dead]'));
        $dead = (string) $browser->text('.ae-dead-list');
        foreach ([1001, 1002, 1003] as $order) {
            $this->assertStringContainsString("RuntimeException: payment gateway declined order $order", $dead);
        }
        $this->assertStringContainsString('2/2', $dead, 'two attempts each');
        $this->assertGreaterThan(0, $browser->count('.ae-chart rect.ae-bar-dead'));
        file_put_contents("$root/docs/demo.png", $browser->screenshot());

        $browser->click('.ae-dead-list tr[data-state=dead] button[value=cancel]');
        // The page that answers the click may still be loading, or the status
        // block being swapped by a refresh, when the message shows: wait for all.
        $browser->waitFor(
            fn (Chromium $b) => preg_match('~^Task \w+ cancelled\.$~', (string) $b->text('.ae-msg'))
                && $b->text('[data-count=dead]') === '2' && $b->text('[data-count=cancelled]') === '1',
            10,
            'the cancel button to leave 2 dead and 1 cancelled'
        );
        unset($browser);

        posix_kill(-proc_get_status($this->demo)['pid'], SIGINT);
        $deadline = microtime(true) + 15;
        while (($status = proc_get_status($this->demo))['running'] && microtime(true) < $deadline) {
            usleep(50000);
        }
        $this->assertFalse($status['running'], 'bin/demo stops on Ctrl-C: ' . $this->log());
        $this->assertSame(0, $status['exitcode'], $this->log());
        $this->assertStringContainsString('Demo stopped.', $this->log());
        $this->assertDirectoryDoesNotExist($tmp, 'the temp dir is removed');
        $this->assertFalse(@fsockopen('127.0.0.1', $port, $errno, $error, 0.5), 'nothing listens any more');
        proc_close($this->demo);
        $this->demo = null;
    }

    private function log(): string
    {
        return (string) file_get_contents($this->output);
    }

    /** @return list<string> the match */
    private function waitForOutput(string $pattern, float $seconds): array
    {
        $deadline = microtime(true) + $seconds;
        while (!preg_match($pattern, $this->log(), $m)) {
            if (!proc_get_status($this->demo)['running'] || microtime(true) > $deadline) {
                $this->fail("bin/demo did not print $pattern:\n" . $this->log());
            }
            usleep(100000);
        }
        return $m;
    }
}
