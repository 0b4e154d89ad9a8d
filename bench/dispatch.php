<?php

/**
 * Dispatch through nginx + php-fpm (pm static, 4 workers), measured in one run:
 * - enqueue-to-start latency of tasks deferred one at a time on an idle server;
 * - no-op tasks completed per second for N tasks (one task per request, and
 *   batched by serve()), next to plain hello.php requests per second through
 *   the same server at the same concurrency (ab -c 4).
 * Usage: php bench/dispatch.php [tasks]   (needs nginx, php-fpm, ab; the extension loaded)
 */

declare(strict_types=1);

use AsyncEngine\Engine;
use AsyncEngine\Tests\Servers\NginxFpm;

require __DIR__ . '/../tests/php/Servers/WebServer.php';
require __DIR__ . '/../tests/php/Servers/NginxFpm.php';

$tasks = (int) ($argv[1] ?? 2000);
$dir = sys_get_temp_dir() . '/async-engine-bench-' . getmypid();
mkdir($dir);
$db = "$dir/engine.sqlite";
$secret = 'bench-secret-0123456789';
$server = new NginxFpm($db, $secret, $dir);
$server->start();
Engine::configure(['database' => $db, 'secret' => $secret, 'base_url' => $server->url()]);
$effects = "$dir/effects.txt";

function settle(float $limit): float
{
    $started = microtime(true);
    do {
        $s = Engine::stats();
        if ($s['queued'] + $s['running'] === 0) {
            return microtime(true) - $started;
        }
        usleep(2000);
    } while (microtime(true) - $started < $limit);
    throw new RuntimeException('tasks did not finish: ' . json_encode($s));
}

function pct(array $xs, float $p): float
{
    sort($xs);
    return $xs[min(count($xs) - 1, (int) floor(count($xs) * $p))];
}

// Warm up the workers.
for ($i = 0; $i < 20; $i++) {
    Engine::defer('/worker.php', 'append', ['file' => '/dev/null', 'line' => 'w']);
}
settle(30);

// 1. Latency on an idle server: one task at a time.
$latencies = [];
for ($i = 0; $i < 200; $i++) {
    Engine::defer('/worker.php', 'append', ['file' => $effects, 'line' => "l$i", 'deferred_at' => microtime(true)]);
    settle(10);
}
foreach (file($effects, FILE_IGNORE_NEW_LINES) as $line) {
    [, $deferred, $started] = explode(' ', $line);
    $latencies[] = ((float) $started - (float) $deferred) * 1000;
}

// 2. Throughput of no-op tasks: one per request, then batched by serve().
function throughput(int $n, string $endpoint): float
{
    $started = microtime(true);
    for ($i = 0; $i < $n; $i++) {
        Engine::defer($endpoint, 'noop');
    }
    settle(300);
    return $n / (microtime(true) - $started);
}
$single = throughput($tasks, '/noop.php?batch=1');
$batched = throughput($tasks, '/noop.php?batch=50');

// 3. hello.php through the same server, same concurrency as max_workers.
$ab = shell_exec(sprintf('ab -q -n %d -c 4 %s 2>&1', $tasks, escapeshellarg($server->url('/hello.php'))));
preg_match('/Requests per second:\s+([\d.]+)/', (string) $ab, $m);
$hello = (float) ($m[1] ?? 0);

$server->stop();
exec('rm -rf ' . escapeshellarg($dir));
printf("enqueue-to-start on idle nginx+fpm (200 tasks): p50 %.2f ms, p99 %.2f ms\n", pct($latencies, 0.5), pct($latencies, 0.99));
printf("no-op tasks, one per request (%d): %.0f tasks/s\n", $tasks, $single);
printf("no-op tasks, serve() batches of 50 (%d): %.0f tasks/s\n", $tasks, $batched);
printf("hello.php, ab -c 4 (%d requests): %.0f requests/s\n", $tasks, $hello);
printf("tasks/s ÷ hello.php requests/s: %.2f (one per request), %.2f (batched)\n", $single / $hello, $batched / $hello);
