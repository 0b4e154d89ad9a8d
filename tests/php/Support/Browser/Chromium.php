<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Support\Browser;

use AsyncEngine\Tests\Support\Http;
use AsyncEngine\Tests\Support\Servers\WebServer;

/**
 * Headless Chromium driven through Debian's chromedriver with the W3C
 * WebDriver protocol (JSON over HTTP): just what the tests need.
 */
final class Chromium
{
    private const ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';

    /** @var resource */
    private $driver;
    private int $port;
    private string $session;

    public function __construct(int $width = 1280, int $height = 1500)
    {
        foreach (['/usr/bin/chromedriver', '/usr/bin/chromium'] as $binary) {
            if (!is_executable($binary)) {
                throw new \RuntimeException("$binary is missing: run bin/setup (Debian's chromium and chromium-driver)");
            }
        }
        $this->port = WebServer::freePort();
        // Its own process group, so that the browser it starts is stopped with it.
        $this->driver = proc_open(
            ['setsid', '/usr/bin/chromedriver', "--port={$this->port}"],
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'], 2 => ['file', '/dev/null', 'w']],
            $pipes
        );
        $deadline = microtime(true) + 15;
        while (($this->call('GET', '/status', null, false)['ready'] ?? false) !== true) {
            if (microtime(true) > $deadline) {
                $this->stopDriver();
                throw new \RuntimeException('chromedriver did not start');
            }
            usleep(50000);
        }
        $args = ['--headless=new', '--disable-gpu', '--disable-dev-shm-usage', "--window-size=$width,$height",
            '--force-device-scale-factor=1', '--hide-scrollbars'];
        if (posix_geteuid() === 0) {
            $args[] = '--no-sandbox'; // Chromium refuses to run its sandbox as root
        }
        $created = $this->call('POST', '/session', ['capabilities' => ['alwaysMatch' => [
            'browserName' => 'chrome',
            'goog:chromeOptions' => ['binary' => '/usr/bin/chromium', 'args' => $args],
        ]]]);
        $this->session = $created['sessionId'];
    }

    public function __destruct()
    {
        if (isset($this->session)) {
            $this->call('DELETE', "/session/{$this->session}", null, false);
        }
        $this->stopDriver();
    }

    public function open(string $url): void
    {
        $this->command('POST', '/url', ['url' => $url]);
    }

    public function url(): string
    {
        return $this->command('GET', '/url');
    }

    /** The element's id for a CSS selector, null if the page has none. */
    public function find(string $css): ?string
    {
        $found = $this->command('POST', '/elements', ['using' => 'css selector', 'value' => $css]);
        return $found ? $found[0][self::ELEMENT] : null;
    }

    /** How many elements match a CSS selector. */
    public function count(string $css): int
    {
        return count($this->command('POST', '/elements', ['using' => 'css selector', 'value' => $css]));
    }

    /** The visible text of the first element a CSS selector matches, null if none. */
    public function text(string $css): ?string
    {
        return $this->onElement($css, fn (string $id) => $this->command('GET', "/element/$id/text"), false);
    }

    /** Clicks the first element a CSS selector matches. */
    public function click(string $css): void
    {
        $this->onElement($css, fn (string $id) => $this->command('POST', "/element/$id/click", new \stdClass()), true);
    }

    /** Types text into the first element a CSS selector matches. */
    public function type(string $css, string $text): void
    {
        $typing = fn (string $id) => $this->command('POST', "/element/$id/value", ['text' => $text]);
        $this->onElement($css, $typing, true);
    }

    /**
     * Runs $act on the first element a CSS selector matches and returns
     * what it returns. When the page replaced the element, or went to
     * another page, between finding it and acting on it, finds it again (a
     * few times at most). With nothing matching: null, or an exception if
     * $required.
     */
    private function onElement(string $css, callable $act, bool $required): mixed
    {
        for ($try = 1;; $try++) {
            $id = $this->find($css);
            if ($id === null) {
                return $required ? throw new \RuntimeException("nothing matches $css") : null;
            }
            try {
                return $act($id);
            } catch (\RuntimeException $e) {
                if ($try === 5 || !self::gone($e)) {
                    throw $e;
                }
            }
        }
    }

    /** Whether WebDriver refused because the element left the page (Chrome says it in two ways). */
    private static function gone(\RuntimeException $e): bool
    {
        return str_contains($e->getMessage(), 'stale element')
            || str_contains($e->getMessage(), 'does not belong to the document');
    }

    /** Waits until $ready returns a value other than null/false, and returns it. */
    public function waitFor(callable $ready, float $seconds, string $what): mixed
    {
        $deadline = microtime(true) + $seconds;
        while (true) {
            $value = $ready($this);
            if ($value !== null && $value !== false) {
                return $value;
            }
            if (microtime(true) > $deadline) {
                throw new \RuntimeException("timed out after {$seconds} s waiting for $what");
            }
            usleep(100000);
        }
    }

    /** A PNG of the window. */
    public function screenshot(): string
    {
        return base64_decode($this->command('GET', '/screenshot'), true);
    }

    private function command(string $method, string $path, mixed $body = null): mixed
    {
        return $this->call($method, "/session/{$this->session}$path", $body);
    }

    private function call(string $method, string $path, mixed $body, bool $strict = true): mixed
    {
        $r = Http::request("http://127.0.0.1:{$this->port}$path", $method, ['Content-Type' => 'application/json'],
            $body !== null ? json_encode($body) : null, 60);
        $reply = json_decode($r['body'], true);
        $status = $r['status'];
        if ($strict && ($status !== 200 || !is_array($reply))) {
            $error = $reply['value']['message'] ?? ($r['body'] !== '' ? $r['body'] : 'no answer');
            throw new \RuntimeException("WebDriver $method $path: $status $error");
        }
        return $reply['value'] ?? null;
    }

    private function stopDriver(): void
    {
        if (is_resource($this->driver)) {
            posix_kill(-proc_get_status($this->driver)['pid'], SIGKILL);
            proc_close($this->driver);
        }
    }
}
