<?php

/**
 * The benchmark harness: async-engine next to its alternatives, measured in
 * one run on this machine, reported against the project's goals. Run it with
 * bench/run (which builds and loads the extension); --smoke runs every part
 * with small counts in about 10 s and writes nothing into docs/.
 */

declare(strict_types=1);

namespace AsyncEngine\Bench;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\Servers\NginxFpm;
use AsyncEngine\Tests\Support\Servers\WebServer;

require __DIR__ . '/lib/enqueue.php';
require __DIR__ . '/lib/noops.php';
require __DIR__ . '/lib/report.php';
require dirname(__DIR__) . '/tests/php/autoload.php';

const SECRET = 'bench-secret-0123456789';
/** Requests of each page every php-fpm worker pool serves before its RSS is read. */
const MEMORY_PAGE_REQUESTS = 200;

if (($argv[1] ?? '') === '--render') {
    // Renders the report again from a run's JSON (after editing the report's text).
    $results = json_decode((string) file_get_contents($argv[2] ?? dirname(__DIR__) . '/docs/benchmarks.json'), true);
    $results['goals'] = goals($results);
    file_put_contents(dirname(__DIR__) . '/docs/benchmarks.md', markdown($results));
    file_put_contents(dirname(__DIR__) . '/docs/benchmarks.svg', chart($results));
    updateReadme(dirname(__DIR__) . '/README.md', $results);
    exit(0);
}
$smoke = in_array('--smoke', $argv, true);
$p = $smoke
    ? ['calls' => 2000, 'spawn_calls' => 500, 'boot_calls' => 20, 'chunk' => 1000, 'tasks' => 300, 'slow' => 40, 'idle' => 20, 'backlog' => 200,
        'depths' => [1000, 10000], 'depth_ops' => 200, 'deferrers' => 16, 'per_deferrer' => 20, 'schedules' => 1000, 'schedule_rounds' => 3,
        'hub_idle' => 200, 'hub_subscribers' => 20, 'hub_events' => 50]
    : ['calls' => 100000, 'spawn_calls' => 100000, 'boot_calls' => 1000, 'chunk' => 10000, 'tasks' => 10000, 'slow' => 1000, 'idle' => 200,
        'backlog' => 2000, 'depths' => [1000, 100000, 1000000], 'depth_ops' => 2000, 'deferrers' => 16,
        'per_deferrer' => 500, 'schedules' => 10000, 'schedule_rounds' => 7, 'hub_idle' => 5000, 'hub_subscribers' => 100, 'hub_events' => 500];
$started = microtime(true);
// bench/run gives a directory and removes it after PHP exits; run alone,
// this script removes its own when it ends, while its engine's background
// thread may still read a database there.
$givenWork = getenv('ASYNC_ENGINE_BENCH_WORK');
$work = $givenWork ?: sys_get_temp_dir() . '/async-engine-bench-' . getmypid();
if (!$givenWork) {
    mkdir($work);
}
// A port that takes connections and never answers: where task requests go
// while enqueue cost is measured, so no task runs meanwhile.
$hole = stream_socket_server('tcp://127.0.0.1:0');
$blackHole = 'http://' . stream_socket_get_name($hole, false);
// One server for the enqueue measurements (its workers keep timers for the
// queues they filled), a fresh one for everything after.
mkdir("$work/enqueue-server");
$enqueueServer = (new NginxFpm(null, null, "$work/enqueue-server"))->site(__DIR__ . '/www');
$server = (new NginxFpm("$work/engine.sqlite", SECRET, $work))->site(__DIR__ . '/www');
register_shutdown_function(function () use ($enqueueServer, $server, $work, $givenWork): void {
    $enqueueServer->stop();
    $server->stop();
    if (!$givenWork) {
        exec('rm -rf ' . escapeshellarg($work));
    }
});
pcntl_async_signals(true);
foreach ([SIGINT, SIGTERM] as $signal) {
    pcntl_signal($signal, fn () => exit(130)); // exit runs the shutdown function: servers stopped
}
$enqueueServer->start();
$results = ['smoke' => $smoke, 'params' => $p, 'machine' => machine()];

step('enqueue cost, CLI and php-fpm');
foreach (['cli', 'fpm'] as $where) {
    $dir = "$work/enqueue-$where";
    mkdir($dir);
    foreach (METHODS as $method => $label) {
        $calls = ['spawn' => $p['spawn_calls'], 'spawn-boot' => $p['boot_calls']][$method] ?? $p['calls'];
        $spawnUrl = $enqueueServer->url('/cron.php');
        if ($where === 'cli') {
            $ns = sample($calls, enqueuer($method, $dir, $blackHole, $spawnUrl));
        } else {
            $ns = [];
            $perRequest = $method === 'spawn-boot' ? 100 : $p['chunk']; // under nginx's 60 s read timeout
            for ($done = 0; $done < $calls; $done += $perRequest) {
                $query = http_build_query(['method' => $method, 'calls' => min($perRequest, $calls - $done),
                    'dir' => $dir, 'blackhole' => $blackHole, 'spawn' => $spawnUrl]);
                [$status, $body] = $enqueueServer->request("/enqueue.php?$query");
                $chunk = json_decode($body, true);
                if ($status !== 200 || !is_array($chunk)) {
                    throw new \RuntimeException("enqueue.php ($method): $status $body");
                }
                array_push($ns, ...$chunk);
            }
        }
        $results['enqueue'][$where][$method] = summary($ns);
        printf("  %-4s %-10s median %8.1f µs  p99 %8.1f µs  (%d calls)\n", $where, $method,
            $results['enqueue'][$where][$method]['median_us'], $results['enqueue'][$where][$method]['p99_us'], $calls);
    }
}

$enqueueServer->stop();
$server->start();
Engine::configure(['database' => "$work/engine.sqlite", 'secret' => SECRET, 'base_url' => $server->url(),
    'max_workers' => 4]);
for ($i = 0; $i < 20; $i++) {
    Engine::defer('/tasks.php', 'noop');
}
settle(30);

step('throughput through nginx + php-fpm (4 workers, max_workers 4)');
$results['throughput'] = [
    'tasks' => $p['tasks'],
    'single' => throughput($p['tasks'], '/tasks.php?batch=1'),
    'batched' => throughput($p['tasks'], '/tasks.php'),
    'drain_single' => throughput($p['tasks'], '/tasks.php?batch=1', true),
    'drain_batched' => throughput($p['tasks'], '/tasks.php', true),
    'hello' => ab($server->url('/hello.php'), $p['tasks']),
    'keepalive' => true,
    'slow_tasks' => $p['slow'],
    'slow' => throughput($p['slow'], '/tasks.php', true, 'sleep20'),
    'slow_page' => ab($server->url('/sleep.php'), $p['slow']),
];
printf("  from a backlog: one task per request %.0f tasks/s, serve() defaults %.0f tasks/s; deferred and run: %.0f and "
    . "%.0f tasks/s; hello.php %.0f requests/s\n", $results['throughput']['drain_single'],
    $results['throughput']['drain_batched'], $results['throughput']['single'], $results['throughput']['batched'],
    $results['throughput']['hello']);
printf("  tasks of 20 ms from a backlog %.0f tasks/s; a 20-ms page %.0f requests/s\n", $results['throughput']['slow'],
    $results['throughput']['slow_page']);

step('enqueue-to-start latency');
$stamps = "$work/stamps-idle.txt";
for ($i = 0; $i < $p['idle']; $i++) {
    Engine::defer('/tasks.php', 'stamp', ['file' => $stamps, 'at' => microtime(true)]);
    settle(10);
}
$results['latency']['idle'] = latencies($stamps);
$stamps = "$work/stamps-backlog.txt";
for ($i = 0; $i < $p['backlog']; $i++) {
    Engine::defer('/tasks.php', 'stamp', ['file' => $stamps, 'at' => microtime(true)]);
}
settle(120);
$results['latency']['backlog'] = latencies($stamps) + ['tasks' => $p['backlog']];
// A cron-driven runner that wakes every minute starts a task uniformly 0-60 s after it is queued.
$results['latency']['cron'] = ['p50_ms' => 30000.0, 'p99_ms' => 59400.0];
printf("  idle p50 %.2f ms p99 %.2f ms; backlog of %d p50 %.0f ms p99 %.0f ms\n",
    $results['latency']['idle']['p50_ms'], $results['latency']['idle']['p99_ms'], $p['backlog'],
    $results['latency']['backlog']['p50_ms'], $results['latency']['backlog']['p99_ms']);

step('concurrency: ' . $p['deferrers'] . ' processes deferring, 4 php-fpm workers claiming');
$results['concurrency'] = concurrency($work, $server->url(), $p['deferrers'], $p['per_deferrer']);
printf("  %d tasks: deferred at %.0f/s, all done at %.0f tasks/s; busy naps: deferrers %d, workers %d; errors %d\n",
    $results['concurrency']['tasks'], $results['concurrency']['deferred_per_s'],
    $results['concurrency']['done_per_s'], $results['concurrency']['naps_deferrers'],
    $results['concurrency']['naps_workers'], $results['concurrency']['errors']);

step('memory (RSS)');
$results['memory'] = memory($server, $work);
$results['memory_pages'] = ['requests' => MEMORY_PAGE_REQUESTS, 'concurrency' => 4];
$server->stop();
foreach ($results['memory'] as $what => $kb) {
    printf("  %-40s %6.1f MiB\n", $what, $kb / 1024);
}

step('queue depth: defer() and claim (accept + complete) at ' . implode(', ', $p['depths']) . ' queued tasks');
$db = "$work/depth.sqlite";
foreach ($p['depths'] as $depth) {
    php([__DIR__ . '/lib/depth.php', 'fill', $db, $blackHole, (string) $depth]);
    $row = [
        'defer' => summary(php([__DIR__ . '/lib/depth.php', 'defer', $db, $blackHole, (string) $p['depth_ops']])),
        'claim' => summary(php([__DIR__ . '/lib/depth.php', 'claim', $db, $blackHole, (string) $p['depth_ops']])),
    ];
    $results['depth'][$depth] = $row;
    printf("  %8d queued: defer median %.1f µs, claim median %.1f µs\n", $depth, $row['defer']['median_us'],
        $row['claim']['median_us']);
}

step("schedules: defer() and claim with 0 and {$p['schedules']} schedules (1,000 tasks queued; {$p['schedule_rounds']} rounds, "
    . 'interleaved)');
// Two databases, one of them with the schedules; measured in turns, so that
// drift of the machine over the step weighs on both alike.
$dbs = ['without' => "$work/no-schedules.sqlite", 'with' => "$work/schedules.sqlite"];
foreach ($dbs as $db) {
    php([__DIR__ . '/lib/depth.php', 'fill', $db, $blackHole, '1000']);
}
$results['schedules']['count'] = php([__DIR__ . '/lib/depth.php', 'schedules', $dbs['with'], $blackHole, (string) $p['schedules']]);
$rounds = [];
// One round's median moves by a third between rounds minutes apart on this
// machine; the middle of several rounds is what the ≤ 1.2× goals can judge.
for ($round = 0; $round < $p['schedule_rounds']; $round++) {
    foreach ($dbs as $k => $db) {
        foreach (['defer', 'claim'] as $op) {
            $rounds[$k][$op][] = summary(php([__DIR__ . '/lib/depth.php', $op, $db, $blackHole, (string) $p['depth_ops']]));
        }
    }
}
foreach ($rounds as $k => $ops) {
    foreach ($ops as $op => $summaries) {
        // The round whose median is the middle one.
        usort($summaries, fn (array $a, array $b): int => $a['median_us'] <=> $b['median_us']);
        $results['schedules'][$k][$op] = $summaries[intdiv(count($summaries), 2)];
    }
    printf("  %-7s schedules: defer median %.1f µs, claim median %.1f µs\n", $k, $results['schedules'][$k]['defer']['median_us'],
        $results['schedules'][$k]['claim']['median_us']);
}

step("live-events hub: {$p['hub_idle']} idle subscribers, then {$p['hub_subscribers']} subscribers and {$p['hub_events']} updates");
$results['hub'] = hub($work, $p);
printf("  %d idle connections held (opened in %.1f s), host RSS +%.1f MiB (%.1f KiB each); latency p50 %.2f ms p99 %.2f ms; fan-out %.0f deliveries/s\n",
    $results['hub']['idle'], $results['hub']['idle_seconds'], $results['hub']['rss_growth_kb'] / 1024,
    $results['hub']['rss_growth_kb'] / max(1, $results['hub']['idle']), $results['hub']['p50_ms'], $results['hub']['p99_ms'],
    $results['hub']['fanout_per_s']);

$results['goals'] = goals($results);
$results['seconds'] = microtime(true) - $started;
echo "\nGoals (measured / baseline / ratio):\n";
foreach ($results['goals'] as $g) {
    printf("  %-4s %s: %s / %s / %s (goal %s)\n", $g['met'] ? 'MET' : 'MISS', $g['name'], $g['measured'],
        $g['baseline'], $g['ratio'], $g['goal']);
}
printf("\nTook %.0f s.\n", $results['seconds']);

$out = $smoke ? $work : dirname(__DIR__) . '/docs';
file_put_contents("$out/benchmarks.md", markdown($results));
file_put_contents("$out/benchmarks.svg", chart($results));
file_put_contents("$out/benchmarks.json", json_encode($results, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n");
if ($smoke) {
    check($results);
    echo "Smoke run: every part ran; the report rendered (" . strlen(markdown($results)) . " bytes).\n";
} else {
    updateReadme(dirname(__DIR__) . '/README.md', $results);
    echo "Wrote docs/benchmarks.md, docs/benchmarks.svg, docs/benchmarks.json and README's headline numbers.\n";
}

// ---------------------------------------------------------------------------

function step(string $what): void
{
    static $t0 = null;
    $t0 ??= microtime(true);
    printf("[%5.1f s] %s\n", microtime(true) - $t0, $what);
}

/** @param list<int> $ns */
function summary(array $ns): array
{
    sort($ns);
    $n = count($ns);
    return ['calls' => $n, 'median_us' => $ns[intdiv($n, 2)] / 1000, 'p99_us' => $ns[min($n - 1, (int) floor($n * 0.99))] / 1000];
}

function percentile(array $xs, float $p): float
{
    sort($xs);
    return (float) $xs[min(count($xs) - 1, (int) floor(count($xs) * $p))];
}

/** Waits until nothing is queued or running; returns how long that took. */
function settle(float $limit): float
{
    // A cheap indexed check every millisecond (stats() counts every task).
    static $pending = null;
    $pending ??= open($GLOBALS['work'] . '/engine.sqlite')->prepare(PENDING_SQL);
    return waitIdle($pending, $limit, 0.001);
}

/**
 * No-op tasks completed per second, deferred and run, or from a backlog
 * (see noopsPerSecond(); section 1 measures the cost of deferring them).
 */
function throughput(int $n, string $endpoint, bool $backlog = false, string $task = 'noop'): float
{
    return noopsPerSecond($n, $endpoint, $backlog ? 0.0003 : null, fn () => settle(600), $task);
}

/**
 * Requests per second of ab at concurrency 4, on kept-alive connections as
 * the engine's self-requests are sent (reqwest keeps its connections).
 */
function ab(string $url, int $requests): float
{
    $out = (string) shell_exec(sprintf('ab -q -k -n %d -c 4 %s 2>&1', $requests, escapeshellarg($url)));
    if (!preg_match('/Requests per second:\s+([\d.]+)/', $out, $m) || !preg_match('/Failed requests:\s+0\b/', $out)) {
        throw new \RuntimeException("ab failed: $out");
    }
    return (float) $m[1];
}

/** Enqueue-to-start of the stamped tasks, in ms. */
function latencies(string $file): array
{
    $ms = [];
    foreach (file($file, FILE_IGNORE_NEW_LINES) as $line) {
        [$at, $started] = explode(' ', $line);
        $ms[] = ((float) $started - (float) $at) * 1000;
    }
    return ['tasks' => count($ms), 'p50_ms' => percentile($ms, 0.5), 'p99_ms' => percentile($ms, 0.99)];
}

/**
 * Runs a PHP script with this process's ini; returns its JSON output (its
 * standard output: what it logs, such as deliveries to the black hole that
 * timed out, goes to its standard error and into the exception if it fails).
 */
function php(array $args): mixed
{
    $errFile = tempnam(sys_get_temp_dir(), 'async-engine-bench-err');
    $process = proc_open([PHP_BINARY, ...$args], [1 => ['pipe', 'w'], 2 => ['file', $errFile, 'w']], $pipes);
    $out = stream_get_contents($pipes[1]);
    $code = proc_close($process);
    $err = (string) file_get_contents($errFile);
    unlink($errFile);
    $json = json_decode((string) $out, true);
    if ($code !== 0 || $json === null) {
        throw new \RuntimeException(implode(' ', $args) . ": exit $code\n$out\n$err");
    }
    return $json;
}

function concurrency(string $work, string $baseUrl, int $processes, int $each): array
{
    // Each worker's busy naps are read before and after (by 4 requests at a
    // time, so every worker answers), not by the task requests themselves:
    // the tasks run as in the uncontended run they are compared with.
    $naps = "$work/naps.txt";
    $readNaps = fn () => ab("$baseUrl/naps.php?" . http_build_query(['file' => $naps]), 40);
    $readNaps();
    $endpoint = '/tasks.php';
    // Every process starts and opens the database before the clock starts
    // (the uncontended run is one process that is already running), then
    // all are told to go at once.
    $procs = $ins = $outs = [];
    for ($i = 0; $i < $processes; $i++) {
        $procs[] = proc_open([PHP_BINARY, __DIR__ . '/lib/deferrer.php', "$work/engine.sqlite", $baseUrl, $endpoint,
            (string) $each], [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => ['redirect', 1]], $pipes);
        [$ins[], $outs[]] = [$pipes[0], $pipes[1]];
    }
    $readLine = function (int $i) use ($outs): string {
        $got = fgets($outs[$i]);
        if ($got === false) {
            throw new \RuntimeException('deferrer: ' . stream_get_contents($outs[$i]));
        }
        return $got;
    };
    foreach (array_keys($procs) as $i) {
        if ($readLine($i) !== "ready\n") {
            throw new \RuntimeException('deferrer did not start: ' . stream_get_contents($outs[$i]));
        }
    }
    $t = microtime(true);
    foreach ($ins as $in) {
        fwrite($in, "go\n");
    }
    $reports = [];
    foreach (array_keys($procs) as $i) {
        $reports[] = json_decode($readLine($i), true) ?? throw new \RuntimeException('deferrer: bad report');
    }
    $deferSeconds = max(array_column($reports, 'seconds'));
    settle(300);
    $wall = microtime(true) - $t;
    foreach (array_keys($procs) as $i) {
        fwrite($ins[$i], "naps\n");
        $reports[$i] += json_decode($readLine($i), true) ?? throw new \RuntimeException('deferrer: bad naps');
        fclose($ins[$i]);
        fclose($outs[$i]);
        proc_close($procs[$i]);
    }
    $readNaps();
    $perWorker = [];
    foreach (file($naps, FILE_IGNORE_NEW_LINES) as $line) {
        [$pid, $n] = array_map('intval', explode(' ', $line));
        $perWorker[$pid] = [min($perWorker[$pid][0] ?? $n, $n), max($perWorker[$pid][1] ?? $n, $n)];
    }
    $total = $processes * $each;
    return [
        'processes' => $processes,
        'tasks' => $total,
        'deferred_per_s' => $total / $deferSeconds,
        'done_per_s' => $total / $wall,
        'naps_deferrers' => array_sum(array_column($reports, 'naps')),
        'naps_workers' => array_sum(array_map(fn ($r) => $r[1] - $r[0], $perWorker)),
        'naps_read_around' => true,
        'started_before_clock' => true,
        'errors' => array_sum(array_column($reports, 'errors')),
    ];
}

/** Resident memory (KiB) of PHP processes with and without the extension. */
function memory(NginxFpm $server, string $work): array
{
    $rss = "echo (int) preg_replace('/\\D/', '', implode(preg_grep('/^VmRSS/', file('/proc/self/status'))));";
    $system = PHP_CONFIG_FILE_SCAN_DIR;
    $so = getenv('ASYNC_ENGINE_SO');
    $cli = fn (array $ini, string $code) => (int) shell_exec('PHP_INI_SCAN_DIR=' . escapeshellarg($system) . ' '
        . escapeshellarg(PHP_BINARY) . ' ' . implode(' ', array_map(fn ($i) => '-d ' . escapeshellarg($i), $ini))
        . ' -r ' . escapeshellarg($code));
    // Both servers serve the same pages last: hello.php, and router.php, which
    // reads $_SERVER as any routed page does (that alone maps 1.5 MiB more of
    // opcache's shared interned strings into a worker, with or without the
    // extension, which reads $_SERVER on every task request). Four at a time,
    // so that every worker serves both: one after another, some workers of
    // the server without the extension never did, and its average came out
    // up to 1.6 MiB low.
    $fpm = function (NginxFpm $s): int {
        foreach (['/hello.php', '/router.php'] as $page) {
            ab($s->url($page), MEMORY_PAGE_REQUESTS);
        }
        $kb = array_map(fn (int $pid) => (int) preg_replace('/\D/', '', (string) shell_exec("grep VmRSS /proc/$pid/status")),
            $s->workerPids());
        return (int) round(array_sum($kb) / max(1, count($kb)));
    };
    $with = $fpm($server);
    $server->stop();
    // The same server without the extension: php-fpm reads only PHP's own ini files.
    $scanDir = getenv('PHP_INI_SCAN_DIR');
    putenv("PHP_INI_SCAN_DIR=$system");
    @mkdir("$work/no-extension");
    $without = new NginxFpm(null, null, "$work/no-extension");
    $without->site(__DIR__ . '/www')->start();
    $withoutKb = $fpm($without);
    $without->stop();
    putenv("PHP_INI_SCAN_DIR=$scanDir");
    return [
        'PHP CLI without the extension' => $cli([], $rss),
        'PHP CLI with the extension, idle' => $cli(["extension=$so"], $rss),
        'PHP CLI with the extension, after defer()' => $cli(["extension=$so",
            "async_engine.database=$work/memory.sqlite", 'async_engine.base_url=http://127.0.0.1:9'],
            "AsyncEngine\\Engine::defer('/t.php', 'x'); $rss"),
        'php-fpm worker without the extension' => $withoutKb,
        'php-fpm worker with the extension, after tasks' => $with,
    ];
}

function goals(array $r): array
{
    $cli = $r['enqueue']['cli'];
    $depths = $r['depth'];
    $first = reset($depths);
    $last = end($depths);
    $lastDepth = array_key_last($depths);
    $firstDepth = array_key_first($depths);
    $t = $r['throughput'];
    $c = $r['concurrency'];
    $mem = [$r['memory']['php-fpm worker without the extension'], $r['memory']['php-fpm worker with the extension, after tasks']];
    $goal = fn (string $name, string $measured, string $baseline, float $ratio, string $goal, bool $met) =>
        compact('name', 'measured', 'baseline', 'goal', 'met') + ['ratio' => sprintf('%.2f×', $ratio)];
    return [
        $goal('defer() vs a PDO INSERT into a one-index queue table (CLI median)', us($cli['defer']['median_us']),
            us($cli['pdo1']['median_us']), $cli['defer']['median_us'] / $cli['pdo1']['median_us'], '≤ 1.5×',
            $cli['defer']['median_us'] <= 1.5 * $cli['pdo1']['median_us']),
        $goal('loopback spawn vs defer() (CLI median)', us($cli['spawn']['median_us']), us($cli['defer']['median_us']),
            $cli['spawn']['median_us'] / $cli['defer']['median_us'], '≥ 100× (defer faster)',
            $cli['spawn']['median_us'] >= 100 * $cli['defer']['median_us']),
        $goal('tasks/s from a backlog, serve() defaults, vs hello.php requests/s', sprintf('%.0f/s', $t['drain_batched']),
            sprintf('%.0f/s', $t['hello']), $t['drain_batched'] / $t['hello'], '≥ 1.0×', $t['drain_batched'] >= $t['hello']),
        $goal('tasks/s from a backlog, one per request, vs hello.php requests/s', sprintf('%.0f/s', $t['drain_single']),
            sprintf('%.0f/s', $t['hello']), $t['drain_single'] / $t['hello'], '≥ 0.5×',
            $t['drain_single'] >= 0.5 * $t['hello']),
        $goal('tasks/s deferred and run, serve() defaults, vs hello.php requests/s', sprintf('%.0f/s', $t['batched']),
            sprintf('%.0f/s', $t['hello']), $t['batched'] / $t['hello'], '≥ 1.0×', $t['batched'] >= $t['hello']),
        $goal('tasks/s deferred and run, one per request, vs hello.php requests/s', sprintf('%.0f/s', $t['single']),
            sprintf('%.0f/s', $t['hello']), $t['single'] / $t['hello'], '≥ 0.5×', $t['single'] >= 0.5 * $t['hello']),
        $goal('tasks of 20 ms from a backlog (serve() defaults) vs a 20-ms page under ' . abCommand($t),
            sprintf('%.0f/s', $t['slow']), sprintf('%.0f/s', $t['slow_page']), $t['slow'] / $t['slow_page'], '≥ 0.9×',
            $t['slow'] >= 0.9 * $t['slow_page']),
        $goal("tasks/s with {$c['processes']} processes deferring vs uncontended (serve() defaults)",
            sprintf('%.0f/s', $c['done_per_s']), sprintf('%.0f/s', $t['batched']), $c['done_per_s'] / $t['batched'],
            '≥ 0.5×', $c['done_per_s'] >= 0.5 * $t['batched']),
        $goal('php-fpm worker RSS with the extension, after tasks, vs without', sprintf('%.1f MiB', $mem[1] / 1024),
            sprintf('%.1f MiB', $mem[0] / 1024), $mem[1] / max(1, $mem[0]), 'under +8 MiB',
            $mem[1] - $mem[0] < 8 * 1024),
        $goal('enqueue-to-start p50, idle', sprintf('%.2f ms', $r['latency']['idle']['p50_ms']), '5 ms',
            $r['latency']['idle']['p50_ms'] / 5, '< 1× (under 5 ms)', $r['latency']['idle']['p50_ms'] < 5),
        $goal("claim cost at $lastDepth vs $firstDepth queued (median)", us($last['claim']['median_us']),
            us($first['claim']['median_us']), $last['claim']['median_us'] / $first['claim']['median_us'], '≤ 2×',
            $last['claim']['median_us'] <= 2 * $first['claim']['median_us']),
        ...array_map(function (string $op) use ($r, $goal): array {
            [$with, $without] = [$r['schedules']['with'][$op]['median_us'], $r['schedules']['without'][$op]['median_us']];
            return $goal("$op() with {$r['schedules']['count']} schedules vs none (median)", us($with), us($without),
                $with / $without, '≤ 1.2× (not measurably slower)', $with <= 1.2 * $without);
        }, ['defer', 'claim']),
    ];
}

function us(float $us): string
{
    return $us >= 1000 ? sprintf('%.2f ms', $us / 1000) : sprintf('%.1f µs', $us);
}

/**
 * The hub hosted by one of 4 php-fpm workers: idle connections it holds
 * (and the host's RSS growth), publish-to-receive latency and fan-out,
 * driven by core/examples/hub_load.rs.
 */
function hub(string $work, array $p): array
{
    mkdir("$work/hub");
    $server = (new NginxFpm("$work/hub/engine.sqlite", SECRET, "$work/hub"))->site(__DIR__ . '/www');
    do {
        $hubPort = WebServer::freePort();
    } while ($hubPort === $server->port);
    // The workers' error log is a file, so that what their background
    // threads log (a hub that could not listen) is there to read.
    $server->ini(['async_engine.hub_listen' => "127.0.0.1:$hubPort", 'error_log' => "$work/hub/php-errors.log"]);
    $server->start();
    try {
        $statuses = [];
        for ($i = 0; $i < 8; $i++) {
            $statuses[] = $server->request('/hello.php')[0];
        }
        Engine::configure(['database' => "$work/hub/engine.sqlite", 'hub_listen' => "127.0.0.1:$hubPort"]);
        $deadline = microtime(true) + 30;
        while (($pid = Engine::stats()['hub']['host_pid']) === null && microtime(true) < $deadline) {
            usleep(50000);
        }
        if ($pid === null) {
            $leases = open("$work/hub/engine.sqlite")->query('SELECT * FROM hub_leases')->fetchAll();
            throw new \RuntimeException("no worker hosts the hub on port $hubPort after 30 s; hello.php answered "
                . implode(', ', $statuses) . '; stats ' . json_encode(Engine::stats()['hub']) . '; leases '
                . json_encode($leases) . "\n--- php-errors.log\n"
                . @file_get_contents("$work/hub/php-errors.log") . $server->log());
        }
        $rss = function () use ($pid): int {
            preg_match('/^VmRSS:\s+(\d+)/m', (string) file_get_contents("/proc/$pid/status"), $m);
            return (int) $m[1];
        };
        $before = $rss();
        $load = proc_open([dirname(__DIR__) . '/target/release/examples/hub_load', "127.0.0.1:$hubPort", "$work/hub/engine.sqlite",
            (string) $p['hub_idle'], (string) $p['hub_subscribers'], (string) $p['hub_events']],
            [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => ['file', "$work/hub/load.log", 'w']], $pipes);
        $ready = (string) fgets($pipes[1]);
        if (!str_starts_with($ready, 'idle_ready ')) {
            throw new \RuntimeException("hub_load: $ready " . file_get_contents("$work/hub/load.log"));
        }
        usleep(500000);
        $with = $rss();
        fwrite($pipes[0], "\n");
        $out = json_decode((string) stream_get_contents($pipes[1]), true);
        proc_close($load);
        $idle = json_decode(substr($ready, strlen('idle_ready ')), true);
        if (!is_array($out) || !is_array($idle)) {
            throw new \RuntimeException('hub_load printed no results: ' . file_get_contents("$work/hub/load.log"));
        }
        return ['idle' => $idle['opened'], 'idle_failed' => $idle['failed'], 'idle_seconds' => $idle['seconds'],
            'rss_before_kb' => $before, 'rss_growth_kb' => $with - $before] + $out;
    } finally {
        Engine::configure(['hub_listen' => null]);
        $server->stop();
    }
}

/** The smoke run's sanity checks: every number is there and plausible. */
function check(array $r): void
{
    foreach ($r['enqueue'] as $where => $methods) {
        foreach ($methods as $method => $s) {
            if (!($s['median_us'] > 0 && $s['p99_us'] >= $s['median_us'])) {
                throw new \RuntimeException("enqueue $where $method: " . json_encode($s));
            }
        }
    }
    foreach (['single', 'batched', 'drain_single', 'drain_batched', 'hello'] as $k) {
        if (!($r['throughput'][$k] > 0)) {
            throw new \RuntimeException("throughput $k is " . $r['throughput'][$k]);
        }
    }
    if ($r['schedules']['count'] !== $r['params']['schedules']) {
        throw new \RuntimeException('schedules created: ' . json_encode($r['schedules']['count']));
    }
    $hub = $r['hub'];
    if ($hub['idle'] !== $r['params']['hub_idle'] || $hub['latency_received'] !== $hub['subscribers'] * $hub['events']
        || $hub['fanout_delivered'] !== $hub['subscribers'] * $hub['events']) {
        throw new \RuntimeException('hub run incomplete: ' . json_encode($hub));
    }
    if ($r['latency']['idle']['tasks'] !== $r['params']['idle'] || $r['concurrency']['errors'] !== 0) {
        throw new \RuntimeException('latency or concurrency run incomplete: ' . json_encode([$r['latency'], $r['concurrency']]));
    }
}

/** The host, for the report. */
function machine(): array
{
    $cpu = preg_match('/^model name\s*:\s*(.+)$/m', (string) @file_get_contents('/proc/cpuinfo'), $m) ? $m[1] : 'unknown CPU';
    $mem = preg_match('/^MemTotal:\s*(\d+)/m', (string) @file_get_contents('/proc/meminfo'), $m2) ? (int) $m2[1] : 0;
    return [
        'cpu' => $cpu,
        'cores' => (int) shell_exec('nproc'),
        'memory_gib' => round($mem / 1048576, 1),
        'os' => trim((string) shell_exec('. /etc/os-release && echo "$PRETTY_NAME"')) . ', Linux ' . php_uname('r'),
        'php' => PHP_VERSION,
        'sqlite' => (new \SQLite3(':memory:'))->querySingle('SELECT sqlite_version()') ?? '?',
        'nginx' => trim((string) shell_exec('nginx -v 2>&1')),
        'date' => gmdate('Y-m-d H:i') . ' UTC',
        // Anything else running moves the ratios: the report says how busy the machine was.
        'load' => (float) explode(' ', (string) @file_get_contents('/proc/loadavg'))[0],
        'commit' => trim((string) shell_exec('git -C ' . escapeshellarg(dirname(__DIR__)) . ' rev-parse --short HEAD 2>/dev/null')),
    ];
}
