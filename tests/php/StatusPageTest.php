<?php

declare(strict_types=1);

namespace AsyncEngine\Tests;

use AsyncEngine\Engine;
use AsyncEngine\StatusPage;
use AsyncEngine\Tests\Servers\PhpServer;

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
        $this->assertSame(['time', 'authorised', 'stats', 'history', 'recent', 'dead'], array_keys($data));
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
        $page = new StatusPage(true, ['token' => 't<k>']);
        $html = $page->handle('GET', [], [])[2];
        $this->assertStringContainsString('private-4242', $html);
        $this->assertSame(3, substr_count($html, '<input type="hidden" name="token" value="t&lt;k&gt;">'),
            'retry + cancel for the dead task, cancel for the queued one');
        $this->assertStringContainsString('<button name="action" value="retry">Retry</button>', $html);

        [$status, $headers] = $page->handle('POST', ['token' => 't<k>', 'format' => 'html'], ['action' => 'retry',
            'id' => $this->dead]);
        $this->assertSame(303, $status);
        $this->assertSame('?' . http_build_query(['token' => 't<k>', 'msg' => "Task {$this->dead} requeued."]),
            $headers['Location']);
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

    public function testServeAuthorisesByTokenBehindPhpServer(): void
    {
        $docroot = "{$this->dir}/public";
        mkdir($docroot);
        $class = var_export(dirname(__DIR__, 2) . '/php/StatusPage.php', true);
        file_put_contents("$docroot/status.php", "<?php\nrequire $class;\n"
            . "AsyncEngine\\StatusPage::serve(['token' => 'open-sesame-123']);\n");
        $server = new PhpServer($this->db, self::SECRET, $this->dir);
        $server->site($docroot);
        $server->start();
        try {
            $url = fn (string $q) => $server->url("/status.php$q");
            [$status, $html] = self::http($url(''));
            $this->assertSame(200, $status, $html . $server->log());
            $this->assertStringContainsString('read-only', $html);
            $this->assertStringNotContainsString('<form', $html);
            foreach (['', '?token=wrong', '?token[]=open-sesame-123'] as $q) {
                [$status] = self::http($url($q), ['action' => 'cancel', 'id' => $this->queued]);
                $this->assertSame(403, $status, $q);
            }
            $this->assertSame('queued', Engine::status($this->queued)['state']);

            [$status, $json] = self::http($url('?format=json&token=open-sesame-123'));
            $this->assertTrue(json_decode($json, true)['authorised']);
            [$status, $html] = self::http($url('?token=open-sesame-123'));
            $this->assertStringContainsString('<input type="hidden" name="token" value="open-sesame-123">', $html);
            [$status, , $location] = self::http($url(''), ['token' => 'open-sesame-123', 'action' => 'cancel',
                'id' => $this->queued]);
            $this->assertSame([303, '?' . http_build_query(['msg' => "Task {$this->queued} cancelled."])],
                [$status, $location]);
            $this->assertSame('cancelled', Engine::status($this->queued)['state']);
        } finally {
            $server->stop();
        }
    }

    /**
     * @param array<string, string>|null $post
     * @return array{int, string, ?string} status, body, Location
     */
    private static function http(string $url, ?array $post = null): array
    {
        $location = null;
        $ch = curl_init($url);
        curl_setopt_array($ch, [CURLOPT_RETURNTRANSFER => true, CURLOPT_TIMEOUT => 10,
            CURLOPT_HEADERFUNCTION => function ($ch, string $line) use (&$location): int {
                if (stripos($line, 'Location:') === 0) {
                    $location = trim(substr($line, 9));
                }
                return strlen($line);
            }]);
        if ($post !== null) {
            curl_setopt($ch, CURLOPT_POSTFIELDS, http_build_query($post));
        }
        $body = (string) curl_exec($ch);
        $status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        curl_close($ch);
        return [$status, $body, $location];
    }
}
