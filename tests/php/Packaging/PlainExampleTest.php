<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Packaging;

use AsyncEngine\Tests\Support\Servers\NginxFpm;
use AsyncEngine\Tests\Support\Servers\PhpServer;
use AsyncEngine\Tests\Support\Servers\WebServer;
use PHPUnit\Framework\TestCase;

/**
 * examples/plain as a user gets it: installed with Composer (the package from
 * a path repository, offline) and served by php -S and by nginx + php-fpm.
 */
final class PlainExampleTest extends TestCase
{
    private string $app;

    protected function setUp(): void
    {
        $this->app = sys_get_temp_dir() . '/async-engine-plain-' . bin2hex(random_bytes(4));
        $root = dirname(__DIR__, 3);
        exec('cp -r ' . escapeshellarg("$root/examples/plain") . ' ' . escapeshellarg($this->app));
        exec('rm -rf ' . escapeshellarg("$this->app/vendor") . ' ' . escapeshellarg("$this->app/var") . ' ' . escapeshellarg("$this->app/composer.lock"));
        $json = json_decode((string) file_get_contents("$this->app/composer.json"), true);
        $json['repositories'] = [['type' => 'path', 'url' => $root], ['packagist.org' => false]];
        file_put_contents("$this->app/composer.json", json_encode($json, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES));
        $env = ['COMPOSER_HOME' => "$this->app/.composer", 'COMPOSER_DISABLE_NETWORK' => '1', 'COMPOSER_NO_AUDIT' => '1'];
        $proc = proc_open(['composer', 'install', '--no-interaction', '--no-progress'], [0 => ['file', '/dev/null', 'r'],
            1 => ['pipe', 'w'], 2 => ['redirect', 1]], $pipes, $this->app, $env + getenv());
        $out = stream_get_contents($pipes[1]);
        fclose($pipes[1]);
        $this->assertSame(0, proc_close($proc), $out);
    }

    protected function tearDown(): void
    {
        exec('rm -rf ' . escapeshellarg($this->app));
    }

    public function testPageDefersAndTheWorkerSendsTheMailOnPhpServer(): void
    {
        $this->runThrough(new PhpServer(null, null, $this->app), 'cli-server');
    }

    public function testPageDefersAndTheWorkerSendsTheMailOnNginxFpm(): void
    {
        $this->runThrough(new NginxFpm(null, null, $this->app), 'fpm-fcgi');
    }

    private function runThrough(WebServer $server, string $sapi): void
    {
        $server->site("$this->app/public");
        $server->start();
        try {
            $ids = [];
            foreach (['ann@example.com', 'bob@example.com', 'cy@example.com'] as $email) {
                [$status, $body] = $server->request('/?email=' . urlencode($email));
                $this->assertSame(200, $status, $body . $server->log());
                $this->assertMatchesRegularExpression("/^Signed up $email; welcome mail queued as task ([0-9A-Z]{26})$/", trim($body));
                // The mail sleeps 0.2 s before it writes: had the page waited
                // for it, the outbox would hold it by the time the page answers.
                $outbox = "$this->app/var/outbox.log";
                $this->assertStringNotContainsString($email, is_file($outbox) ? (string) file_get_contents($outbox) : '',
                    'the page answered before its mail was sent');
                $ids[] = substr(trim($body), -26);
            }
            $deadline = microtime(true) + 15;
            while ((!is_file($outbox) || count(file($outbox)) < 3) && microtime(true) < $deadline) {
                usleep(50000);
            }
            $lines = is_file($outbox) ? file($outbox, FILE_IGNORE_NEW_LINES) : [];
            $this->assertCount(3, $lines, $server->log());
            $sent = array_map(fn ($l) => array_slice(explode("\t", $l), 1), $lines);
            sort($sent);
            $this->assertSame([['ann@example.com', 'Welcome!', $sapi], ['bob@example.com', 'Welcome!', $sapi],
                ['cy@example.com', 'Welcome!', $sapi]], $sent);

            [$status] = $server->request('/worker.php');
            $this->assertSame(403, $status);
            [$status] = $server->request('/worker.php', ['X-Async-Engine-Slot' => 'x', 'X-Async-Engine-Time' => (string) time(),
                'X-Async-Engine-Signature' => str_repeat('0', 64)], 'POST');
            $this->assertSame(403, $status);
            $this->assertCount(3, file($outbox), 'nothing ran twice');
        } finally {
            $server->stop();
        }
    }
}
