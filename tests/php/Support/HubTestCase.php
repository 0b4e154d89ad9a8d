<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Support;

use AsyncEngine\Engine;
use AsyncEngine\InvalidTask;
use AsyncEngine\Tests\Support\Servers\WebServer;
use AsyncEngine\Tests\Support\Sse\SseClients;

/**
 * The live-events hub hosted by a web server's own PHP workers: the
 * Mercure protocol spoken over real HTTP (curl), and a hub whose worker is
 * killed while updates are published.
 */
abstract class HubTestCase extends EngineTestCase
{
    protected const HUB_KEY = 'phpunit-hub-key-0123456789abcdef';

    protected WebServer $server;
    protected int $hubPort;

    abstract protected function makeServer(): WebServer;

    protected function setUp(): void
    {
        parent::setUp();
        $this->hubPort = WebServer::freePort();
        $this->server = $this->makeServer()->ini(['async_engine.hub_listen' => "127.0.0.1:{$this->hubPort}", 'async_engine.hub_jwt_key' => self::HUB_KEY]);
        $this->server->start();
        Engine::configure(['hub_listen' => "127.0.0.1:{$this->hubPort}", 'hub_jwt_key' => self::HUB_KEY]);
        // Workers watch (and may host the hub) once they served a request.
        for ($i = 0; $i < 8; $i++) {
            $this->server->request('/hello.php');
        }
        $this->waitForHub();
    }

    protected function tearDown(): void
    {
        $this->server->stop();
        parent::tearDown();
    }

    /**
     * Waits until a worker listens on the hub's port, calling $meanwhile
     * between tries (if given); returns how long that took.
     */
    protected function waitForHub(float $limit = 10, ?callable $meanwhile = null): float
    {
        $start = microtime(true);
        while (!($c = @fsockopen('127.0.0.1', $this->hubPort, $errno, $error, 0.2))) {
            $this->assertLessThan($limit, microtime(true) - $start, 'no worker hosts the hub: ' . $this->server->log());
            $meanwhile === null ? usleep(20000) : $meanwhile();
        }
        fclose($c);
        return microtime(true) - $start;
    }

    /** Whether `stats()['hub']` met $done within $seconds (asked every 20 ms). */
    private function hubUntil(callable $done, float $seconds): bool
    {
        $deadline = microtime(true) + $seconds;
        while (!$done(Engine::stats()['hub'])) {
            if (microtime(true) >= $deadline) {
                return false;
            }
            usleep(20000);
        }
        return true;
    }

    protected function hubUrl(string $query): string
    {
        return "http://127.0.0.1:{$this->hubPort}/.well-known/mercure$query";
    }

    /** An HS256 token with these claims, signed with the hub's key. */
    protected static function jwt(array $claims): string
    {
        $b64 = fn (string $s): string => rtrim(strtr(base64_encode($s), '+/', '-_'), '=');
        $signed = $b64('{"alg":"HS256","typ":"JWT"}') . '.' . $b64(json_encode($claims));
        return $signed . '.' . $b64(hash_hmac('sha256', $signed, self::HUB_KEY, true));
    }

    /** [status, body] of a request to the hub. */
    protected function hubRequest(string $method, string $query, array $headers = [], string $body = ''): array
    {
        $r = Http::request($this->hubUrl($query), $method, $headers, $body !== '' ? $body : null, 5);
        return [$r['status'], $r['body']];
    }

    /** The pid of the worker listening on the hub's port (with `php -S`, the first process serves too). */
    protected function hubPid(): int
    {
        $inode = null;
        foreach (file('/proc/net/tcp') as $line) {
            $f = preg_split('/\s+/', trim($line));
            if (($f[3] ?? '') === '0A' && str_ends_with($f[1], sprintf(':%04X', $this->hubPort))) {
                $inode = $f[9];
            }
        }
        $this->assertNotNull($inode, 'nothing listens on the hub port');
        foreach ($this->server->allPids() as $pid) {
            foreach (glob("/proc/$pid/fd/*") ?: [] as $fd) {
                if (@readlink($fd) === "socket:[$inode]") {
                    return $pid;
                }
            }
        }
        $this->fail('no process of the server holds the hub socket');
    }

    public function testSubscribersReceiveWhatTheyMaySeeReplayAndPresence(): void
    {
        $reader = Engine::subscriberToken(['books/{id}'], 60, ['name' => 'Ada']);
        $anon = new SseClients($this->hubUrl('?topic=' . urlencode('books/{id}') . '&topic=news'), 1);
        $authed = new SseClients($this->hubUrl('?topic=' . urlencode('books/{id}')), 1, ['Authorization' => "Bearer $reader"]);
        $cookie = new SseClients($this->hubUrl('?topic=books/1'), 1, ['Cookie' => "mercureAuthorization=$reader"]);
        $both = fn () => count(Engine::subscribers('books/{id}')) === 2 && count(Engine::subscribers('books/1')) === 1;
        foreach ([$anon, $authed, $cookie] as $c) {
            $c->pump(0.05);
        }
        $this->assertTrue($anon->until($both, 5), json_encode(Engine::subscribers('books/{id}')));

        // Presence: each subscription with its token's payload.
        $who = Engine::subscribers('books/{id}');
        $this->assertEqualsCanonicalizing([null, ['name' => 'Ada']], array_column($who, 'payload'), json_encode($who));

        // A page publishes (through the web server), and so does this CLI process.
        [, $public] = $this->server->request('/publish.php?topic=books/1&data=' . urlencode("two\nlines") . '&type=change');
        [, $private] = $this->server->request('/publish.php?topic=books/1&data=secret&private=1');
        $news = Engine::publish(['news', 'books/9'], 'both topics');
        $got = fn (SseClients $c, int $n) => $c->until(fn ($c) => count($c->events[0]) >= $n, 5);
        foreach ([[$anon, 2], [$authed, 3], [$cookie, 2]] as [$c, $n]) {
            $this->assertTrue($got($c, $n), json_encode($c->events));
        }
        $this->assertSame([$public, $news], $anon->ids(0), 'anonymous: public updates only, each once');
        $this->assertSame(['id' => $public, 'data' => "two\nlines", 'type' => 'change'], $anon->events[0][0]);
        $this->assertSame([$public, $private, $news], $authed->ids(0));
        $this->assertSame([$public, $private], $cookie->ids(0), 'the cookie token, and only books/1');

        // Replay after an id, by header and by query parameter.
        $replay = new SseClients($this->hubUrl('?topic=' . urlencode('books/{id}')), 1, ['Last-Event-ID' => $public, 'Authorization' => "Bearer $reader"]);
        $this->assertTrue($got($replay, 2));
        $this->assertSame([$private, $news], $replay->ids(0));
        $query = new SseClients($this->hubUrl('?topic=news&lastEventID=' . urlencode($public)), 1);
        $this->assertTrue($got($query, 1));
        $this->assertSame([$news], $query->ids(0));

        // Tokens that are forged, expired or for another key: 401, and nothing streamed.
        $expired = self::jwt(['exp' => time() - 1, 'mercure' => ['subscribe' => ['*']]]);
        foreach (["$reader" . 'x', $expired, 'not.a.jwt'] as $bad) {
            [$status, $body] = $this->hubRequest('GET', '?topic=news', ["Authorization: Bearer $bad"]);
            $this->assertSame(401, $status, $body);
        }

        // Publishing over HTTP needs a publisher token for every topic.
        $publisher = self::jwt(['mercure' => ['publish' => ['books/{id}']]]);
        [$status] = $this->hubRequest('POST', '', ["Authorization: Bearer $reader"], 'topic=books/2&data=x');
        $this->assertSame(403, $status);
        [$status] = $this->hubRequest('POST', '', [], 'topic=books/2&data=x');
        $this->assertSame(401, $status);
        [$status, $id] = $this->hubRequest('POST', '', ["Authorization: Bearer $publisher"], 'topic=books/2&data=from+http&private=on');
        $this->assertSame(200, $status, $id);
        $this->assertTrue($got($authed, 4));
        $this->assertSame(['id' => $id, 'data' => 'from http', 'type' => null], $authed->events[0][3]);

        // The subscriptions API, for a token that may read it.
        $admin = self::jwt(['mercure' => ['subscribe' => ['/.well-known/mercure/subscriptions{/topic}{/subscriber}']]]);
        [$status, $json] = $this->hubRequest('GET', '/subscriptions/' . rawurlencode('books/{id}'), ["Authorization: Bearer $admin"]);
        $this->assertSame(200, $status, $json);
        $list = json_decode($json, true);
        $this->assertSame('Subscriptions', $list['type']);
        $this->assertCount(3, $list['subscriptions'], $json); // anon, authed, replay
        [$status] = $this->hubRequest('GET', '/subscriptions', ["Authorization: Bearer $reader"]);
        $this->assertSame(403, $status);

        // A subscriber that leaves is gone from presence, and its leaving is published.
        $watch = new SseClients($this->hubUrl('?topic=' . urlencode('/.well-known/mercure/subscriptions/{topic}/{subscriber}')), 1, ['Authorization' => "Bearer $admin"]);
        $watch->pump(0.3);
        $cookie->close();
        unset($cookie);
        $leaves = fn (SseClients $w): array => array_values(array_filter(
            array_map(fn (array $e): array => json_decode($e['data'], true), $w->events[0]),
            fn (array $s): bool => $s['active'] === false
        ));
        $this->assertTrue($watch->until(fn ($w) => $leaves($w) !== [], 5), 'a leave event: ' . json_encode($watch->events));
        [$left] = $leaves($watch);
        $this->assertSame(['Subscription', 'books/1', false], [$left['type'], $left['topic'], $left['active']]);
        $this->assertSame(['name' => 'Ada'], $left['payload']);
        $this->assertSame([], Engine::subscribers('books/1'));
    }

    public function testWhenTheHubsPortIsTakenStatsAndTheStatusPageSayWhyUntilAWorkerListens(): void
    {
        $this->server->stop();
        // A worker stopped by the server's SIGTERM leaves its lease to run out.
        $this->assertTrue($this->hubUntil(fn (array $hub) => $hub['host_pid'] === null, 10), 'the lease ran out');
        // Taken after the server started, so that its processes do not
        // inherit the socket; its workers try to listen once they served a request.
        $this->server->start();
        $squatter = stream_socket_server("tcp://127.0.0.1:{$this->hubPort}", $errno, $error);
        $this->assertNotFalse($squatter, "could not take the hub's port: $error");
        for ($i = 0; $i < 8; $i++) {
            $this->server->request('/hello.php');
        }
        $this->assertTrue($this->hubUntil(fn (array $hub) => $hub['listen_error'] !== null, 10),
            'no failure to listen recorded: ' . $this->server->log());
        $why = Engine::stats()['hub']['listen_error'];
        $this->assertMatchesRegularExpression(
            "/^worker \\d+ could not start the hub on 127\\.0\\.0\\.1:{$this->hubPort}: .*in use.*; it tries again in \\d+ s/",
            $why
        );
        // Each worker that fails says so in turn (with its own pid).
        [, , $html] = \AsyncEngine\StatusPage::answer(['authorised' => true], ['REQUEST_METHOD' => 'GET'], [], [], []);
        $this->assertMatchesRegularExpression(
            "/<p class=\"ae-dead\" data-hub-error>worker \\d+ could not start the hub on 127\\.0\\.0\\.1:{$this->hubPort}: /",
            $html
        );
        // Freed, the port gets a host (a worker that has not failed yet at
        // its next poll, else the first whose wait ends), and the failure
        // is cleared.
        fclose($squatter);
        $this->waitForHub(40, fn () => usleep(100000));
        $this->hubUntil(fn (array $hub) => $hub['listen_error'] === null, 5);
        $this->assertNull(Engine::stats()['hub']['listen_error']);
        $this->assertNotNull(Engine::stats()['hub']['host_pid']);
    }

    public function testStatsAndTheStatusPageSayWhoHostsTheHub(): void
    {
        $clients = new SseClients($this->hubUrl('?topic=a&topic=b'), 1);
        $this->assertTrue($clients->until(fn () => Engine::stats()['hub']['subscriptions'] === 2, 5));
        Engine::publish('a', 'x');
        $hub = Engine::stats()['hub'];
        $this->assertSame(['listen' => "127.0.0.1:{$this->hubPort}", 'host_pid' => $this->hubPid(), 'listen_error' => null],
            array_intersect_key($hub, ['listen' => 1, 'host_pid' => 1, 'listen_error' => 1]));
        $this->assertGreaterThanOrEqual(3, $hub['updates_kept'], 'the update and two join events');
        [, , $html] = \AsyncEngine\StatusPage::answer(['authorised' => true], ['REQUEST_METHOD' => 'GET'], [], [], []);
        $this->assertStringContainsString("hosted by worker pid {$hub['host_pid']}", $html);
        // With every worker gone, no one hosts it, and the page says so.
        $clients->close();
        $this->server->stop();
        usleep(3200000); // the lease runs out
        $this->assertNull(Engine::stats()['hub']['host_pid']);
        [, , $html] = \AsyncEngine\StatusPage::answer(['authorised' => true], ['REQUEST_METHOD' => 'GET'], [], [], []);
        $this->assertStringContainsString('no worker hosts it', $html);
    }

    public function testABurstOfSubscribersAddsNoThreadsToTheHostingWorker(): void
    {
        // Each subscription is one database write on the host's background
        // connection: 200 at once must queue there, not start a thread each.
        $clients = new SseClients($this->hubUrl('?topic=burst'), 200);
        $this->assertTrue($clients->until(fn () => count(Engine::subscribers('burst')) === 200, 20), 'all 200 subscribed');
        $pid = $this->hubPid();
        $threads = array_map(fn (string $task): string => trim((string) file_get_contents("$task/comm")),
            glob("/proc/$pid/task/*"));
        sort($threads);
        $clients->close();
        // PHP's own thread, the sender and its database thread.
        $this->assertCount(3, $threads, 'threads of the hosting worker: ' . implode(', ', $threads));
        $this->assertSame(['async-engine', 'async-engine-db'], array_values(array_filter($threads,
            fn (string $t): bool => str_starts_with($t, 'async-engine'))));
    }

    public function testMalformedOversizedAndOverlongRequestsGet4xxAndTheHubGoesOn(): void
    {
        $raw = function (string $request): string {
            $c = stream_socket_client("tcp://127.0.0.1:{$this->hubPort}", $errno, $error, 2);
            stream_set_timeout($c, 5);
            @fwrite($c, $request); // the hub may answer and close before all of it is sent
            $status = (string) fgets($c);
            fclose($c);
            return trim($status);
        };
        $cases = [
            'not HTTP' => "NOT HTTP AT ALL\r\n\r\n",
            'a 1 MiB header' => "GET /.well-known/mercure?topic=a HTTP/1.1\r\nHost: hub\r\nX-Big: " . str_repeat('a', 1 << 20) . "\r\n\r\n",
            '500 headers' => "GET /.well-known/mercure?topic=a HTTP/1.1\r\nHost: hub\r\n" . str_repeat("X-A: b\r\n", 500) . "\r\n",
            '5000 topics' => 'GET /.well-known/mercure?' . implode('&', array_map(fn ($i) => "topic=t$i", range(1, 5000))) . " HTTP/1.1\r\nHost: hub\r\n\r\n",
            'a 3000-byte topic' => 'GET /.well-known/mercure?topic=' . str_repeat('t', 3000) . " HTTP/1.1\r\nHost: hub\r\n\r\n",
            'no topic' => "GET /.well-known/mercure HTTP/1.1\r\nHost: hub\r\n\r\n",
        ];
        foreach ($cases as $what => $request) {
            $this->assertMatchesRegularExpression('~^HTTP/1\.[01] 4\d\d ~', $raw($request), $what);
        }
        // Still serving.
        $clients = new SseClients($this->hubUrl('?topic=after'), 1);
        $clients->pump(0.3);
        $id = Engine::publish('after', 'still here');
        $this->assertTrue($clients->until(fn ($c) => $c->ids(0) === [$id], 5));
    }

    public function testBadPublishAndTokenCallsThrowAndStoreNothing(): void
    {
        $cases = [
            [fn () => Engine::publish([], 'x'), 'at least one topic'],
            [fn () => Engine::publish(42, 'x'), 'must be a string or a list of strings, got int'],
            [fn () => Engine::publish('t', 'x', ['privte' => true]), "unknown option 'privte'"],
            [fn () => Engine::publish('t', 'x', ['private' => 'yes']), "option 'private' of publish() must be a bool"],
            [fn () => Engine::publish('t', 'x', ['id' => "a\nb"]), "option 'id' must be 1 to 255 bytes on one line"],
            [fn () => Engine::publish('t', "\xff", []), 'data is not valid UTF-8'],
            [fn () => Engine::publish("\xff", 'x'), 'a topic is not valid UTF-8'],
            [fn () => Engine::publish(['ok', str_repeat('t', 3000)], 'x'), 'a topic is 3000 bytes long; the limit is 2048'],
            [fn () => Engine::publish(array_map('strval', range(1, 65)), 'x'), 'an update names at most 64 topics, got 65'],
            [fn () => Engine::publish('t', str_repeat('x', 101)), 'at most 100 bytes (hub_max_event_size), got 101'],
            [fn () => Engine::subscriberToken(['t'], 0), "a token's ttl must be 1 to"],
            [fn () => Engine::subscriberToken([''], 60), 'a token names at most 64 topics of 1 to 2048 bytes'],
        ];
        Engine::configure(['hub_max_event_size' => 100]);
        $watch = new SseClients($this->hubUrl('?topic=*'), 1, ['Last-Event-ID' => 'earliest']);
        $watch->pump(0.2);
        foreach ($cases as [$call, $message]) {
            try {
                $call();
                $this->fail("no exception for $message");
            } catch (InvalidTask $e) {
                $this->assertStringContainsString($message, $e->getMessage());
            }
        }
        $watch->pump(0.5);
        $this->assertSame([], $watch->events[0], 'nothing was published');
    }

    public function testAKilledHubWorkerIsReplacedAndTwentySubscribersReceiveAllThousandUpdatesInOrder(): void
    {
        $clients = new SseClients($this->hubUrl('?topic=feed'), 20);
        $this->assertTrue($clients->until(fn () => count(Engine::subscribers('feed')) === 20, 10), 'all 20 subscribed');
        $published = [];
        $killedAt = null;
        $down = false;
        $back = null;
        $start = microtime(true);
        // Down once the killed worker's socket is gone; back when another listens.
        $watch = function () use (&$down, &$back, &$killedAt): void {
            if ($killedAt === null || $back !== null) {
                return;
            }
            $c = @fsockopen('127.0.0.1', $this->hubPort, $errno, $error, 0.05);
            if ($c) {
                fclose($c);
                $back = $down ? microtime(true) - $killedAt : null;
            } else {
                $down = true;
            }
        };
        for ($i = 0; $i < 1000; $i++) {
            $published[] = Engine::publish('feed', "update $i");
            if ($i === 300) {
                $pid = $this->hubPid();
                posix_kill($pid, SIGKILL);
                $killedAt = microtime(true);
            }
            $watch();
            // A steady 200 updates per second, the subscribers served meanwhile.
            $clients->pump(max(0.0, $start + ($i + 1) / 200 - microtime(true)));
        }
        // On a slow machine the hub may come back after the last update.
        while ($back === null && microtime(true) - $killedAt < 10) {
            $watch();
            $clients->pump(0.02);
        }
        $all = $clients->until(function (SseClients $c): bool {
            foreach ($c->events as $events) {
                if (count($events) < 1000) {
                    return false;
                }
            }
            return true;
        }, 30);
        $this->assertNotNull($back, sprintf(
            "the hub went down and came back while updates were published (%s; stats()['hub']: %s)\n%s",
            $down ? 'it went down and stayed down' : 'no probe found it down',
            json_encode(Engine::stats()['hub']),
            $this->server->log()
        ));
        $this->assertLessThan(10, $back, 'another worker hosts the hub within 10 s (its lease is 3 s)');
        $counts = array_map('count', $clients->events);
        $this->assertTrue($all, 'received: ' . json_encode($counts) . $this->server->log());
        foreach (array_keys($clients->events) as $i) {
            $this->assertSame($published, $clients->ids($i), "subscriber $i: all 1000, in order, no duplicates");
        }
        fwrite(STDERR, sprintf(
            "\n[%s] hub worker killed after 300 of 1000 updates: another worker listened %.2f s later; 20 subscribers reconnected %d times in all and each received 1000/1000 in order\n",
            static::class, $back ?? -1, array_sum($clients->connects) - 20
        ));
    }
}
