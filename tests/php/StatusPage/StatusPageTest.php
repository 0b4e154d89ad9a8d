<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\StatusPage;

use AsyncEngine\Engine;
use AsyncEngine\StatusPage;
use AsyncEngine\Tests\Support\EngineTestCase;
use AsyncEngine\Tests\Support\Http;
use AsyncEngine\Tests\Support\Servers\PhpServer;

/**
 * The status page (php/StatusPage.php): what a read-only and an authorised
 * viewer see and may do, its JSON form, and StatusPage::serve() with a token
 * behind php -S. Each test is its own process (its setUp accepts a task
 * request, which lasts as long as the process).
 *
 * @runTestsInSeparateProcesses
 */
final class StatusPageTest extends EngineTestCase
{
    private string $dead;
    private string $queued;

    protected function setUp(): void
    {
        parent::setUp();
        $this->dead = Engine::defer('/w.php', 'charge', ['card' => 'private-4242'], ['max_attempts' => 1]);
        $this->arriveNext();
        Engine::accept()->fail('card <declined>');
        $this->queued = Engine::defer('/w.php', 'later', [], ['delay' => 3600]);
    }

    public function testReadOnlyViewersSeeStateAndErrorsButNoArgsAndNoButtons(): void
    {
        $page = new StatusPage();
        [$status, $headers, $html] = $page->handle('GET', [], []);
        $this->assertSame(200, $status);
        $this->assertSame('text/html; charset=utf-8', $headers['Content-Type']);
        $this->assertStringContainsString('<b data-count="dead">1</b>', $html);
        $this->assertStringContainsString('<b data-count="queued">1</b>', $html);
        $this->assertStringContainsString('of 4 workers busy', $html);
        $this->assertStringContainsString('card &lt;declined&gt;', $html, 'errors shown, escaped');
        $this->assertStringContainsString("data-id=\"{$this->dead}\" data-state=\"dead\"", $html);
        $this->assertStringContainsString('read-only', $html);
        $this->assertStringNotContainsString('private-4242', $html);
        $this->assertStringNotContainsString('<form', $html);
        $this->assertStringNotContainsString('<script src', $html, 'nothing loaded from elsewhere');
        $this->assertStringNotContainsString('<link', $html);

        $data = json_decode($page->handle('GET', ['format' => 'json'], [])[2], true);
        $this->assertFalse($data['authorised']);
        $this->assertArrayNotHasKey('args', $data['dead'][0]);

        $before = $this->snapshot();
        foreach (['retry', 'cancel'] as $action) {
            [$status, , $body] = $page->handle('POST', [], ['action' => $action, 'id' => $this->dead]);
            $this->assertSame(403, $status);
            $this->assertStringContainsString('read-only', $body);
        }
        $this->assertSame($before, $this->snapshot());
    }

    public function testTheJsonFormHoldsStatsHistoryRecentAndDeadTasks(): void
    {
        [$status, $headers, $json] = (new StatusPage(true))->handle('GET', ['format' => 'json'], []);
        $this->assertSame([200, 'application/json'], [$status, $headers['Content-Type']]);
        $data = json_decode($json, true, 512, JSON_THROW_ON_ERROR);
        $this->assertSame(['time', 'authorised', 'stats', 'history', 'recent', 'dead', 'schedules'], array_keys($data));
        $this->assertSame([], $data['schedules']);
        $this->assertSame(Engine::stats(), $data['stats']);
        $this->assertSame([300, 5], [$data['history']['seconds'], $data['history']['bucket']]);
        $this->assertCount(60, $data['history']['intervals']);
        $this->assertSame(1, array_sum(array_column($data['history']['intervals'], 'dead')));
        $this->assertSame([$this->queued, $this->dead], array_column($data['recent'], 'id'), 'latest change first');
        $dead = $data['dead'][0];
        $this->assertSame([$this->dead, 'charge', 'dead', 1, 1, 'card <declined>', ['card' => 'private-4242']],
            [$dead['id'], $dead['task'], $dead['state'], $dead['attempt'], $dead['max_attempts'], $dead['last_error'],
                $dead['args']]);
        $this->assertGreaterThanOrEqual(0, $dead['duration']);
        $this->assertNull($data['recent'][0]['duration'], 'a queued task has not run');
    }

    public function testAuthorisedViewersRetryAndCancelWithTheirFormFields(): void
    {
        $page = new StatusPage(true, ['SecurityID' => 't<k>']);
        $html = $page->handle('GET', [], [])[2];
        $this->assertStringContainsString('private-4242', $html);
        $this->assertSame(3, substr_count($html, '<input type="hidden" name="SecurityID" value="t&lt;k&gt;">'),
            'retry + cancel for the dead task, cancel for the queued one');
        $this->assertStringContainsString('<button name="action" value="retry">Retry</button>', $html);

        [$status, $headers] = $page->handle('POST', ['token' => 't<k>', 'format' => 'html'], ['action' => 'retry',
            'id' => $this->dead]);
        $this->assertSame(303, $status);
        $this->assertSame('?' . http_build_query(['msg' => "Task {$this->dead} requeued."]), $headers['Location'],
            'no token in URLs');
        $this->assertSame('queued', Engine::status($this->dead)['state']);

        [$status, , $json] = $page->handle('POST', ['format' => 'json'], ['action' => 'cancel', 'id' => $this->queued]);
        $this->assertSame(200, $status);
        $this->assertSame(['message' => "Task {$this->queued} cancelled."], json_decode($json, true));
        $this->assertSame('cancelled', Engine::status($this->queued)['state']);
        [, , $json] = $page->handle('POST', ['format' => 'json'], ['action' => 'cancel', 'id' => $this->queued]);
        $this->assertStringContainsString('neither queued nor dead: nothing cancelled', $json);

        $before = $this->snapshot();
        foreach ([
            [['action' => 'delete', 'id' => $this->dead], 400, 'action must be retry or cancel'],
            [['action' => 'retry'], 400, 'id is missing'],
            [['action' => 'retry', 'id' => ['x']], 400, 'id is missing'],
        ] as [$post, $code, $message]) {
            [$status, , $body] = $page->handle('POST', [], $post);
            $this->assertSame([$code, "$message\n"], [$status, $body]);
        }
        $this->assertSame([400, "format must be html, json or fragment\n"],
            [$page->handle('GET', ['format' => 'xml'], [])[0], $page->handle('GET', ['format' => 'xml'], [])[2]]);
        $this->assertSame(405, $page->handle('DELETE', [], [])[0]);
        $this->assertSame($before, $this->snapshot());
    }

    public function testTheFragmentIsWhatThePageReloads(): void
    {
        $page = new StatusPage();
        $fragment = $page->handle('GET', ['format' => 'fragment'], [])[2];
        $this->assertStringStartsWith('<main id="ae-status">', $fragment);
        $this->assertStringEndsWith("</main>", $fragment);
        $html = $page->handle('GET', ['msg' => '<b>hi</b>'], [])[2];
        $this->assertStringContainsString('<p class="ae-msg" role="status">&lt;b&gt;hi&lt;/b&gt;</p>', $html);
        $this->assertStringContainsString("url.searchParams.set('format', 'fragment')", $html);
    }

    public function testServeExchangesTheTokenForACookieAndActionsNeedTheCsrfTokenBehindPhpServer(): void
    {
        $docroot = "{$this->dir}/public";
        mkdir($docroot);
        $class = var_export(dirname(__DIR__, 3) . '/php/StatusPage.php', true);
        file_put_contents("$docroot/status.php", "<?php\nrequire $class;\n"
            . "AsyncEngine\\StatusPage::serve(['token' => 'open-sesame-1234567']);\n");
        $server = new PhpServer($this->db, self::SECRET, $this->dir);
        $server->site($docroot);
        $server->start();
        $jar = "{$this->dir}/cookies.txt";
        try {
            $url = fn (string $q) => $server->url("/status.php$q");
            [$status, $html, , $headers] = self::http($url(''));
            $this->assertSame(200, $status, $html . $server->log());
            $this->assertStringContainsString('read-only', $html);
            $this->assertStringNotContainsString('<form', $html);
            $this->assertSame('DENY', $headers['x-frame-options']);
            $this->assertStringContainsString("frame-ancestors 'none'", $headers['content-security-policy']);
            foreach (['', '?token=wrong', '?token[]=open-sesame-1234567'] as $q) {
                [$status] = self::http($url($q), ['action' => 'cancel', 'id' => $this->queued]);
                $this->assertSame(403, $status, $q);
            }
            $this->assertSame('queued', Engine::status($this->queued)['state']);

            // The token, given once, becomes a cookie; the URL goes back without it.
            [$status, , $location, $headers] = self::http($url('?token=open-sesame-1234567&format=json'), null, $jar);
            $this->assertSame([303, '/status.php?format=json'], [$status, $location]);
            $this->assertMatchesRegularExpression('/^async_engine_status=[0-9a-f]{64}; Path=\/status\.php; HttpOnly; SameSite=Strict$/',
                $headers['set-cookie']);
            $this->assertStringNotContainsString('open-sesame', $headers['set-cookie']);
            [, $json] = self::http($url('?format=json'), null, $jar);
            $this->assertTrue(json_decode($json, true)['authorised']);
            [, $html] = self::http($url(''), null, $jar);
            $this->assertStringNotContainsString('open-sesame', $html, 'the token is in no link or form');
            $this->assertSame(1, preg_match('/name="csrf" value="([0-9a-f]{64})"/', $html, $m), $html);
            $csrf = $m[1];

            // Actions without the CSRF token (or with another) change nothing.
            foreach ([[], ['csrf' => str_repeat('0', 64)]] as $extra) {
                [$status] = self::http($url(''), ['action' => 'cancel', 'id' => $this->queued] + $extra, $jar);
                $this->assertSame(403, $status);
            }
            $this->assertSame('queued', Engine::status($this->queued)['state']);
            [$status, , $location] = self::http($url(''), ['action' => 'cancel', 'id' => $this->queued, 'csrf' => $csrf], $jar);
            $this->assertSame([303, '?' . http_build_query(['msg' => "Task {$this->queued} cancelled."])],
                [$status, $location]);
            $this->assertSame('cancelled', Engine::status($this->queued)['state']);
        } finally {
            $server->stop();
        }
    }

    public function testEndpointsWhoseDeliveriesFailAreShown(): void
    {
        Engine::configure(['base_url' => 'http://127.0.0.1:1']);
        Engine::defer('/unreachable.php', 't');
        $deadline = microtime(true) + 5;
        while (Engine::stats()['failing_endpoints'] === [] && microtime(true) < $deadline) {
            usleep(20000);
        }
        $html = (new StatusPage())->handle('GET', ['format' => 'fragment'], [])[2];
        $this->assertStringContainsString('<h2>Deliveries failing</h2>', $html);
        $this->assertStringContainsString('<tr data-failing="/unreachable.php"><td>/unreachable.php</td><td>1</td>', $html);
        $this->assertStringContainsString('could not connect', $html);
    }

    public function testSchedulesAreListedWithTheirNextAndLastRuns(): void
    {
        Engine::schedule('nightly-report', '30 2 * * *', '/w.php', 'report', ['to' => 'private-boss'], ['timezone' => 'Europe/Berlin']);
        $page = new StatusPage();
        $html = $page->handle('GET', ['format' => 'fragment'], [])[2];
        $this->assertStringContainsString('<h2>Schedules</h2>', $html);
        $this->assertStringContainsString('<tr data-schedule="nightly-report"><td>nightly-report</td><td><code>30 2 * * *</code> Europe/Berlin</td><td>/w.php report</td><td>in ', $html);
        $this->assertStringNotContainsString('private-boss', $html);
        $data = json_decode($page->handle('GET', ['format' => 'json'], [])[2], true);
        $schedule = $data['schedules'][0];
        $this->assertSame(['nightly-report', '30 2 * * *', 0, 0, null], [$schedule['name'], $schedule['when'], $schedule['runs'], $schedule['skipped'], $schedule['last_run_at']]);
        $this->assertArrayNotHasKey('args', $schedule, 'read-only viewers see no args');
        $this->assertEquals(Engine::schedules()[0]['next_at'], $schedule['next_at']);
        $authorised = json_decode((new StatusPage(true))->handle('GET', ['format' => 'json'], [])[2], true);
        $this->assertSame(['to' => 'private-boss'], $authorised['schedules'][0]['args']);
    }

    public function testAnEmptyTokenRefusesToServe(): void
    {
        foreach ([false, '', null, 'short'] as $token) {
            [$status, , $body] = StatusPage::answer(['token' => $token], ['REQUEST_METHOD' => 'GET'], [], [], []);
            $this->assertSame(500, $status, var_export($token, true));
            $this->assertStringContainsString('its token is empty or shorter than 16 characters', $body);
            $this->assertStringNotContainsString('task', strtolower($body));
        }
    }

    public function testAnAuthorisedPageStillNeedsTheCsrfTokenForActions(): void
    {
        $before = $this->snapshot();
        $post = ['action' => 'cancel', 'id' => $this->queued];
        [$status, $headers, $html] = StatusPage::answer(['authorised' => true], ['REQUEST_METHOD' => 'GET'], [], [], []);
        $this->assertSame(200, $status);
        $this->assertMatchesRegularExpression('/^async_engine_csrf=([0-9a-f]{64});.*HttpOnly; SameSite=Strict/', $headers['Set-Cookie']);
        preg_match('/name="csrf" value="([0-9a-f]{64})"/', $html, $m);
        [$status] = StatusPage::answer(['authorised' => true], ['REQUEST_METHOD' => 'POST'], [], $post, []);
        $this->assertSame(403, $status, 'no cookie, no field');
        [$status] = StatusPage::answer(['authorised' => true], ['REQUEST_METHOD' => 'POST'], [], $post,
            ['async_engine_csrf' => $m[1]]);
        $this->assertSame(403, $status, 'a cookie alone (a cross-site form) is not enough');
        $this->assertSame($before, $this->snapshot());
        [$status] = StatusPage::answer(['authorised' => true], ['REQUEST_METHOD' => 'POST'], [], $post + ['csrf' => $m[1]],
            ['async_engine_csrf' => $m[1]]);
        $this->assertSame(303, $status);
        $this->assertSame('cancelled', Engine::status($this->queued)['state']);
    }

    /**
     * @param array<string, string>|null $post
     * @return array{int, string, ?string, array<string, string>} status, body, Location, headers (lower-case names)
     */
    private static function http(string $url, ?array $post = null, ?string $jar = null): array
    {
        $r = Http::request($url, body: $post, timeout: 10,
            curl: $jar !== null ? [CURLOPT_COOKIEJAR => $jar, CURLOPT_COOKIEFILE => $jar] : []);
        return [$r['status'], $r['body'], $r['headers']['location'] ?? null, $r['headers']];
    }
}
