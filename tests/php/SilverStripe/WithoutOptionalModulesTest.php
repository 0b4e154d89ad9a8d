<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\SilverStripe;

use AsyncEngine\Tests\Support\Servers\PhpServer;
use AsyncEngine\Tests\Support\Servers\WebServer;

/**
 * The module in a project with the framework and sqlite3 only: it installs,
 * dev/build passes, tasks run; and signed requests get past BasicAuth,
 * AllowedHosts and CanonicalURL redirects while nothing else does.
 */
final class WithoutOptionalModulesTest extends SilverStripeTestCase
{
    protected static function modules(): string
    {
        return '';
    }

    protected static function newServer(string $logs, int $port): WebServer
    {
        return new PhpServer(null, null, $logs, $port);
    }

    public function testTheModuleLoadsWithoutCrontaskOrQueuedjobs(): void
    {
        $this->assertFalse(is_dir(self::$site->dir . '/vendor/silverstripe/crontask'));
        $this->assertFalse(is_dir(self::$site->dir . '/vendor/symbiote/silverstripe-queuedjobs'));
        [$code, $out] = self::$site->php(<<<'PHP'
            echo json_encode([
                'cron' => class_exists(AsyncEngine\SilverStripe\KickCronTask::class),
                'tasks' => array_values(SilverStripe\Core\ClassInfo::implementorsOf(AsyncEngine\SilverStripe\AsyncTask::class)),
                'route' => SilverStripe\Control\Director::config()->get('rules')['_async//$Action'] ?? null,
                'first' => array_key_first(SilverStripe\Core\Injector\Injector::inst()->get(SilverStripe\Control\Director::class)->getMiddlewares()),
            ]);
            PHP);
        $this->assertSame(0, $code, $out);
        $this->assertSame([
            'cron' => false,
            'tasks' => ['App\WriteRecordTask', 'AsyncEngine\SilverStripe\PushHooksTask', 'AsyncEngine\SilverStripe\QueuedJobs\RunQueuedJob'],
            'route' => 'AsyncEngine\SilverStripe\AsyncController',
            'first' => 'AsyncEngineRequestMiddleware',
        ], json_decode($out, true));
        [$code, $out] = self::$site->sake('dev/tasks/async-engine');
        $this->assertSame(0, $code, $out);
        $this->assertStringContainsString('No dead tasks.', $out);
    }

    public function testTaskDeferredFromAPageRuns(): void
    {
        $id = $this->page('/async-test/defer?title=bare');
        $this->waitForState($id, 'done');
        $this->assertSame("task $id via cli-server", self::$site->record('bare'));
    }

    public function testSignedRequestsPassBasicAuthAllowedHostsAndCanonicalUrl(): void
    {
        $site = self::$site;
        $env = (string) file_get_contents("$site->dir/.env");
        $site->setEnv('SS_USE_BASIC_AUTH', 'true');
        $site->setEnv('SS_ALLOWED_HOSTS', 'www.example.com');
        file_put_contents("$site->dir/app/_config/canonical.yml", <<<'YML'
            ---
            Name: test-canonical
            After: ['#canonicalurls']
            ---
            SilverStripe\Core\Injector\Injector:
              SilverStripe\Control\Middleware\CanonicalURLMiddleware:
                properties:
                  ForceWWW: true
                  ForceSSL: true
                  EnabledEnvs: ['dev']
            YML);
        try {
            $site->devBuild();
            // A flush through the web (dev mode) makes the workers read the new config.
            $deadline = microtime(true) + 10;
            do {
                [$status] = self::$server->request('/?flush=1', ['Host' => 'www.example.com']);
            } while ($status !== 301 && microtime(true) < $deadline && usleep(100000) === null);
            $this->assertSame(301, $status, 'plain http is redirected to https');
            [$status] = self::$server->request('/');
            $this->assertSame(400, $status, 'the server\'s own name is not an allowed host');
            [$code, $out] = $site->php('echo SilverStripe\Security\BasicAuthMiddleware::class, " ", getenv("SS_USE_BASIC_AUTH") ?: SilverStripe\Core\Environment::getEnv("SS_USE_BASIC_AUTH");');
            $this->assertSame('SilverStripe\Security\BasicAuthMiddleware true', $out, 'basic auth protects the site');

            // Deferred on the command line: the request goes to SS_BASE_URL's
            // origin (http, no www, not an allowed host, no credentials).
            [$code, $out] = $site->sake('dev/tasks/defer-test', 'title=guarded');
            $this->assertSame(0, $code, $out);
            preg_match('/deferred ([0-9A-Z]{26})/', $out, $m);
            $this->waitForState($m[1] ?? 'none', 'done', 15, "sake: $out");
            $this->assertSame("task {$m[1]} via cli-server", $site->record('guarded'));

            $forged = ['X-Async-Engine-Slot' => str_repeat('b', 32), 'X-Async-Engine-Time' => (string) time(),
                'X-Async-Engine-Signature' => str_repeat('1', 64)];
            [$status] = self::$server->request('/_async/run', $forged, 'POST');
            $this->assertSame(403, $status, 'a forged signature gets past the middlewares, not past the controller');
        } finally {
            file_put_contents("$site->dir/.env", $env);
            unlink("$site->dir/app/_config/canonical.yml");
            $site->devBuild();
            self::$server->request('/?flush=1');
        }
    }
}
