<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\SilverStripe;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\Browser\Chromium;
use AsyncEngine\Tests\Support\Servers\PhpServer;
use AsyncEngine\Tests\Support\Servers\WebServer;
use AsyncEngine\Tests\Support\Sse\SseClients;

/**
 * Live events in a real SilverStripe 5 project on `php -S` (4 workers) with a hub
 * (hub_listen): PushesChanges publishes record changes and runs async hooks,
 * and two CMS editors on one record see each other and each other's saves
 * in headless Chromium.
 */
final class LiveEventsTest extends SilverStripeTestCase
{
    private static int $hubPort;

    protected static function newServer(string $logs, int $port): WebServer
    {
        self::$hubPort = WebServer::freePort();
        return (new PhpServer(null, null, $logs, $port))->ini(['async_engine.hub_listen' => '127.0.0.1:' . self::$hubPort]);
    }

    protected function setUp(): void
    {
        parent::setUp();
        // Workers host the hub once they served a request.
        for ($i = 0; $i < 8; $i++) {
            $this->page('/');
        }
        $deadline = microtime(true) + 10;
        while (!($c = @fsockopen('127.0.0.1', self::$hubPort, $errno, $error, 0.2))) {
            $this->assertLessThan($deadline, microtime(true), 'no worker hosts the hub: ' . self::$server->log());
            usleep(50000);
        }
        fclose($c);
    }

    private function hub(array $topics): string
    {
        return 'http://127.0.0.1:' . self::$hubPort . '/.well-known/mercure?'
            . implode('&', array_map(fn ($t) => 'topic=' . rawurlencode($t), $topics));
    }

    /** Runs PHP in the project; returns its trimmed output. */
    private function php(string $code): string
    {
        [$exit, $out] = self::$site->php($code);
        $this->assertSame(0, $exit, $out);
        return trim($out);
    }

    public function testRecordChangesArePushedPrivatelyAndAsyncHooksRunInATask(): void
    {
        $token = Engine::subscriberToken(['silverstripe/App-PushedNote/{id}']);
        $authed = new SseClients($this->hub(['silverstripe/App-PushedNote/{id}']), 1, ['Authorization' => "Bearer $token"]);
        $anonymous = new SseClients($this->hub(['silverstripe/App-PushedNote/{id}', 'silverstripe/App-PushedNote']), 1);
        $authed->pump(0.5);
        $anonymous->pump(0.1);

        $id = (int) $this->php('$n = App\PushedNote::create(["Title" => "first", "Body" => "b"]); $n->write(); echo $n->ID;');
        $this->php("\$n = App\\PushedNote::get()->byID($id); \$n->Title = 'second'; \$n->write();");
        $this->php("App\\PushedNote::get()->byID($id)->publishSingle();");
        $this->php("App\\PushedNote::get()->byID($id)->doUnpublish();");
        $this->php("App\\PushedNote::get()->byID($id)->delete();");

        $this->assertTrue($authed->until(fn ($c) => count($c->events[0]) >= 5, 10), json_encode($authed->events));
        $events = array_map(fn (array $e) => ['type' => $e['type']] + json_decode($e['data'], true), $authed->events[0]);
        $this->assertSame(['write', 'write', 'publish', 'unpublish', 'delete'], array_column($events, 'type'));
        $this->assertSame(['write', 'App\PushedNote', $id], [$events[0]['event'], $events[0]['class'], $events[0]['id']]);
        $this->assertContains('Title', $events[0]['changed']);
        $this->assertSame(['Title'], $events[1]['changed'], 'the second write changed the title only');
        $this->assertNull($events[0]['by'], 'written from the command line: nobody signed in');
        $anonymous->pump(0.5);
        $this->assertSame([], $anonymous->events[0], 'private by default: nothing for a subscriber without a token');

        // onAfterWriteAsync ran in a task request for each write, with what it changed.
        $this->assertSame('Body,Title', $this->sorted(self::$site->waitForRecord('hook first')));
        $this->assertSame('Title', self::$site->waitForRecord('hook second'));
        $this->assertSame('hook', self::$site->waitForRecord('published second'), 'onAfterPublishAsync ran');
    }

    private function sorted(?string $list): string
    {
        $parts = explode(',', (string) $list);
        $parts = array_values(array_intersect($parts, ['Body', 'Title']));
        sort($parts);
        return implode(',', $parts);
    }

    public function testTwoCmsEditorsOnOneRecordSeeEachOtherAndTheOthersSave(): void
    {
        $id = (int) $this->php('$n = App\PushedNote::create(["Title" => "shared"]); $n->write(); echo $n->ID;');
        $this->php('$m = SilverStripe\Security\Member::create(["FirstName" => "Eddie", "Surname" => "Editor", "Email" => "eddie@example.com"]);'
            . ' $m->write(); $m->changePassword("Correct-Horse-9"); $m->write();'
            . ' SilverStripe\Security\Group::get()->filter("Code", "administrators")->first()->Members()->add($m);');
        $admin = $this->php('echo SilverStripe\Security\DefaultAdminService::singleton()->findOrCreateDefaultAdmin()->getName();');
        $edit = self::$server->url("/admin/notes/App-PushedNote/EditForm/field/App-PushedNote/item/$id/edit");

        $a = $this->login('admin', 'password');
        $b = $this->login('eddie@example.com', 'Correct-Horse-9');
        $a->open($edit);
        $b->open($edit);
        $others = fn (Chromium $c) => fn () => $c->text('.async-presence__others');
        $this->assertSame('Also editing: Eddie Editor', $a->waitFor($others($a), 15, 'presence in the first session'));
        $this->assertSame("Also editing: $admin", $b->waitFor($others($b), 15, 'presence in the second session'));

        // The first editor saves; the second is told who saved.
        $a->type('input[name="Title"]', ' (edited)');
        $a->click('button[name="action_doSave"]');
        $saved = $b->waitFor(fn () => $b->text('.async-presence__saved') ?: null, 15, 'the save notice');
        $this->assertSame("Saved by $admin — reload", $saved);
        $this->assertSame('shared (edited)', $this->php("echo App\\PushedNote::get()->byID($id)->Title;"));
        // The one who saved is not told about their own save.
        $this->assertSame('', (string) $a->text('.async-presence__saved'));
    }

    private function login(string $email, string $password): Chromium
    {
        $browser = new Chromium();
        $browser->open(self::$server->url('/Security/login'));
        $browser->type('input[name="Email"]', $email);
        $browser->type('input[name="Password"]', $password);
        $browser->click('[name="action_doLogin"]');
        try {
            $browser->waitFor(fn () => str_contains((string) $browser->text('body'), "You're logged in as"), 15, "$email signed in");
        } catch (\RuntimeException $e) {
            $this->fail($e->getMessage() . ': ' . $browser->url() . ' ' . $browser->text('body'));
        }
        return $browser;
    }
}
