<?php

/**
 * SQLite next to PostgreSQL, measured in one run: defer() cost from the CLI
 * and tasks/s through nginx + php-fpm. Run it with bench/backends, which
 * builds the extension, starts a throwaway PostgreSQL cluster and sets
 * ASYNC_ENGINE_TEST_PG (and BEFORE_SO for --before). --smoke: small counts,
 * writes nothing.
 */

declare(strict_types=1);

namespace AsyncEngine\Bench;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\Database;
use AsyncEngine\Tests\Support\Servers\NginxFpm;

require dirname(__DIR__) . '/tests/php/autoload.php';
require __DIR__ . '/lib/noops.php';

const SECRET = 'bench-secret-0123456789';

$smoke = in_array('--smoke', $argv, true);
$p = $smoke ? ['calls' => 1000, 'rounds' => 1, 'tasks' => 300, 'claim_seconds' => 0.5, 'claim_tasks' => 300]
    : ['calls' => 20000, 'rounds' => 3, 'tasks' => 3000, 'claim_seconds' => 3, 'claim_tasks' => 20000];
$admin = (string) getenv('ASYNC_ENGINE_TEST_PG');
$beforeSo = (string) getenv('BEFORE_SO');
$work = sys_get_temp_dir() . '/async-engine-backends-' . getmypid();
mkdir($work);
chmod($work, 0755);
$hole = stream_socket_server('tcp://127.0.0.1:0');
$blackHole = 'http://' . stream_socket_get_name($hole, false);
$servers = [];
register_shutdown_function(function () use (&$servers, $work): void {
    foreach ($servers as $s) {
        $s->stop();
    }
    exec('rm -rf ' . escapeshellarg($work));
});
$started = microtime(true);

/** A fresh database on the test cluster; returns its URL. */
function pgDatabase(string $admin, string $name): string
{
    Database::open($admin)->exec("CREATE DATABASE $name");
    return Database::named($admin, $name);
}

/**
 * $url with its host replaced by the directory of the server's Unix socket
 * (percent-encoded, as the engine's URLs name a socket): the connection a
 * PostgreSQL on the same machine is normally reached by.
 */
function overUnixSocket(string $url, string $admin): string
{
    $dirs = (string) Database::open($admin)->query('SHOW unix_socket_directories')->fetchColumn();
    $dir = trim(explode(',', $dirs)[0]);
    if (!str_starts_with($dir, '/')) {
        throw new \RuntimeException("the cluster has no Unix socket ($dirs)");
    }
    return preg_replace('~@[^:/]+~', '@' . rawurlencode($dir), $url, 1);
}


/** Nanosecond samples of defer() in a child process with the extension $so. */
function deferCost(string $database, string $blackHole, int $calls, ?string $so = null): array
{
    $env = getenv();
    if ($so !== null) {
        $ini = sys_get_temp_dir() . '/async-engine-before-ini-' . getmypid();
        @mkdir($ini);
        file_put_contents("$ini/99-async_engine.ini", "extension=$so\n");
        $env['PHP_INI_SCAN_DIR'] = PHP_CONFIG_FILE_SCAN_DIR . ":$ini";
    }
    $proc = proc_open([PHP_BINARY, __DIR__ . '/lib/defer-cost.php', $database, $blackHole, (string) $calls],
        [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, null, $env);
    $out = stream_get_contents($pipes[1]);
    $err = stream_get_contents($pipes[2]);
    if (proc_close($proc) !== 0) {
        throw new \RuntimeException("defer-cost.php failed: $err");
    }
    return json_decode($out, true);
}

/** Nanosecond samples of a bare round trip to PostgreSQL: PDO `SELECT 1`, prepared once. */
function roundTrips(string $database, int $calls): array
{
    $select = Database::open($database)->prepare('SELECT 1');
    $ns = [];
    for ($i = 0; $i < $calls + 200; $i++) {
        $t = hrtime(true);
        $select->execute();
        $select->fetchColumn();
        $ns[] = hrtime(true) - $t;
    }
    return array_slice($ns, 200);
}

/**
 * Runs $measure with one core kept busy by a spinning PHP process (ours,
 * stopped by pid, and ending by itself after 10 minutes at the latest).
 */
function withBusyCore(callable $measure): mixed
{
    $spin = proc_open([PHP_BINARY, '-n', '-r', '$end = microtime(true) + 600; while (microtime(true) < $end) {}'],
        [], $pipes);
    usleep(200000);
    try {
        return $measure();
    } finally {
        proc_terminate($spin);
        proc_close($spin);
    }
}

function summary(array $ns): array
{
    sort($ns);
    $at = fn (float $q) => $ns[min(count($ns) - 1, (int) floor($q * count($ns)))] / 1000;
    return ['median_us' => $at(0.5), 'p99_us' => $at(0.99), 'calls' => count($ns)];
}

/** No-op tasks completed per second, deferred and run, or from a backlog (see noopsPerSecond()). */
function throughput(string $database, int $n, string $endpoint, bool $backlog = false): float
{
    return noopsPerSecond($n, $endpoint, $backlog ? 0.001 : null,
        fn () => waitIdle(Database::open($database)->prepare(PENDING_SQL), 300, 0.002));
}

$backends = [
    'sqlite' => fn (string $tag) => "$work/$tag.sqlite",
    'postgres' => fn (string $tag) => pgDatabase($admin, "bench_$tag"),
];
$variants = ['sqlite' => null, 'postgres' => null] + ($beforeSo !== '' ? ['sqlite-before' => $beforeSo] : []);

echo "== defer() from the CLI ({$p['calls']} calls x {$p['rounds']} rounds, interleaved)\n";
$dbs = [
    'sqlite' => $backends['sqlite']('defer'),
    'postgres' => $backends['postgres']('defer'),
    'sqlite-before' => $backends['sqlite']('defer-before'),
    // Apart, so no database holds more than max_queued tasks.
    'sqlite-busy' => $backends['sqlite']('defer_busy'),
    'postgres-busy' => $backends['postgres']('defer_busy'),
    'postgres-socket' => overUnixSocket($backends['postgres']('defer_socket'), $admin),
];
// Each round also times a bare round trip to PostgreSQL, and all of it again
// with one core kept busy: on a virtual machine an idle core takes tens of µs
// to wake, and a round trip wakes the server's process and the caller. And
// PostgreSQL through its Unix socket instead of TCP, both ways.
$samples = array_fill_keys([...array_keys($variants), 'roundtrip', 'postgres-socket', 'roundtrip-socket', 'sqlite-busy',
    'postgres-busy', 'roundtrip-busy'], []);
for ($round = 0; $round < $p['rounds']; $round++) {
    foreach ($variants as $variant => $so) {
        array_push($samples[$variant], ...deferCost($dbs[$variant], $blackHole, $p['calls'], $so));
    }
    array_push($samples['roundtrip'], ...roundTrips($dbs['postgres'], $p['calls']));
    array_push($samples['postgres-socket'], ...deferCost($dbs['postgres-socket'], $blackHole, $p['calls']));
    array_push($samples['roundtrip-socket'], ...roundTrips($dbs['postgres-socket'], $p['calls']));
    withBusyCore(function () use (&$samples, $dbs, $blackHole, $p): void {
        foreach (['sqlite', 'postgres'] as $variant) {
            array_push($samples["$variant-busy"], ...deferCost($dbs["$variant-busy"], $blackHole, $p['calls']));
        }
        array_push($samples['roundtrip-busy'], ...roundTrips($dbs['postgres'], $p['calls']));
    });
}
$results = ['params' => $p, 'before' => getenv('BEFORE_COMMIT') ?: null];
foreach ($samples as $variant => $ns) {
    $results['defer'][$variant] = summary($ns);
    printf("  %-16s median %6.1f µs  p99 %7.1f µs\n", $variant, $results['defer'][$variant]['median_us'],
        $results['defer'][$variant]['p99_us']);
}

echo "== tasks/s through nginx + php-fpm (4 workers, max_workers 4), {$p['tasks']} no-op tasks\n";
foreach (['sqlite', 'postgres'] as $backend) {
    $database = $backends[$backend]('tasks');
    mkdir("$work/server-$backend");
    $server = (new NginxFpm($database, SECRET, "$work/server-$backend"))->site(__DIR__ . '/www')
        ->ini(['async_engine.max_workers' => '4']);
    $servers[] = $server;
    $server->start();
    Engine::configure(['database' => $database, 'secret' => SECRET, 'base_url' => $server->url(), 'max_workers' => 4]);
    throughput($database, 20, '/tasks.php'); // warm-up: workers connected, statements prepared
    $results['tasks'][$backend] = [
        'single' => throughput($database, $p['tasks'], '/tasks.php?batch=1'),
        'batched' => throughput($database, $p['tasks'], '/tasks.php'),
        'drain_single' => throughput($database, $p['tasks'], '/tasks.php?batch=1', true),
        'drain_batched' => throughput($database, $p['tasks'], '/tasks.php', true),
    ];
    $server->stop();
    printf("  %-9s from a backlog: one task per request %6.0f tasks/s, serve() defaults %6.0f tasks/s; "
        . "deferred and run: %6.0f and %6.0f\n", $backend, $results['tasks'][$backend]['drain_single'],
        $results['tasks'][$backend]['drain_batched'], $results['tasks'][$backend]['single'],
        $results['tasks'][$backend]['batched']);
}
$clients = [1, 8, 32];
echo "== claims/s: clients claiming and completing on one endpoint, each its own server and connection\n";
foreach (['sqlite', 'postgres'] as $backend) {
    $out = shell_exec(escapeshellarg(dirname(__DIR__) . '/target/release/examples/claims') . ' '
        . escapeshellarg($backends[$backend]('claims')) . " {$p['claim_seconds']} {$p['claim_tasks']} "
        . implode(' ', $clients) . ' 2>&1');
    foreach (explode("\n", trim((string) $out)) as $line) {
        $r = json_decode($line, true);
        if (!is_array($r)) {
            throw new \RuntimeException("claims: $out");
        }
        $results['claims'][$backend][$r['clients']] = $r['per_second'];
        printf("  %-9s %2d clients %6.0f tasks/s\n", $backend, $r['clients'], $r['per_second']);
    }
}
$results['seconds'] = microtime(true) - $started;
printf("Took %.0f s.\n", $results['seconds']);

$d = $results['defer'];
$t = $results['tasks'];
$ratio = $d['postgres']['median_us'] / $d['sqlite']['median_us'];
$busyRatio = $d['postgres-busy']['median_us'] / $d['sqlite-busy']['median_us'];
$socketRatio = $d['postgres-socket']['median_us'] / $d['sqlite']['median_us'];
$rows = [
    ['defer() median (CLI)', sprintf('%.1f µs', $d['sqlite']['median_us']), sprintf('%.1f µs', $d['postgres']['median_us']),
        sprintf('%.2f×', $ratio)],
    ['defer() p99 (CLI)', sprintf('%.1f µs', $d['sqlite']['p99_us']), sprintf('%.1f µs', $d['postgres']['p99_us']),
        sprintf('%.2f×', $d['postgres']['p99_us'] / $d['sqlite']['p99_us'])],
    ['defer() median, one core kept busy', sprintf('%.1f µs', $d['sqlite-busy']['median_us']),
        sprintf('%.1f µs', $d['postgres-busy']['median_us']), sprintf('%.2f×', $busyRatio)],
    ['a bare round trip (PDO SELECT 1), median', '—', sprintf('%.1f µs', $d['roundtrip']['median_us']), '—'],
    ['the same, one core kept busy', '—', sprintf('%.1f µs', $d['roundtrip-busy']['median_us']), '—'],
    ['defer() median (CLI), PostgreSQL through its Unix socket', sprintf('%.1f µs', $d['sqlite']['median_us']),
        sprintf('%.1f µs', $d['postgres-socket']['median_us']), sprintf('%.2f×', $socketRatio)],
    ['a bare round trip through the Unix socket, median', '—', sprintf('%.1f µs', $d['roundtrip-socket']['median_us']), '—'],
];
foreach (['drain_single' => 'from a backlog, one per request', 'drain_batched' => 'from a backlog, serve() defaults',
    'single' => 'deferred and run, one per request', 'batched' => 'deferred and run, serve() defaults'] as $k => $label) {
    $rows[] = ["tasks/s, $label", sprintf('%.0f', $t['sqlite'][$k]), sprintf('%.0f', $t['postgres'][$k]),
        sprintf('%.2f×', $t['postgres'][$k] / $t['sqlite'][$k])];
}
foreach ($clients as $n) {
    $c = $results['claims'];
    $rows[] = ["claims/s, $n client" . ($n > 1 ? 's' : ''), sprintf('%.0f', $c['sqlite'][$n]), sprintf('%.0f', $c['postgres'][$n]),
        sprintf('%.2f×', $c['postgres'][$n] / $c['sqlite'][$n])];
}
$md = "# SQLite and PostgreSQL, one run\n\n"
    . "Measured by `bench/backends" . ($results['before'] ? " --before={$results['before']}" : '') . "` on "
    . php_uname('n') . ' (' . trim((string) shell_exec('nproc')) . " cores), " . date('Y-m-d') . ", in "
    . sprintf('%.0f', $results['seconds']) . " s. PostgreSQL " . trim((string) Database::open($admin)->query('SHOW server_version')->fetchColumn())
    . " in a throwaway cluster on 127.0.0.1 (fsync off, as in the tests), SQLite in WAL mode on the local disk. "
    . "defer(): {$p['calls']} calls × {$p['rounds']} rounds per variant from the CLI, interleaved, task requests "
    . "sent to a port that never answers; each round also timed with one core kept busy by a spinning process "
    . "(an idle core of this virtual machine takes tens of µs to wake, and each PostgreSQL round trip wakes the "
    . "server's process and the caller; a web server with traffic has busy cores), and a bare round trip to "
    . "PostgreSQL (PDO `SELECT 1`, prepared) both ways: `defer()` on PostgreSQL is one round trip. The same through "
    . "the server's Unix socket instead of TCP (`postgres://user:password@%2Fpath%2Fto%2Fsocket-dir:port/db`), "
    . "as a PostgreSQL on the web server's own machine is normally reached; the other rows use TCP. Tasks: {$p['tasks']} no-op tasks run by nginx + php-fpm (4 workers, "
    . "max_workers 4), deferred from the CLI due at one instant and timed from it (from a backlog: the server alone), "
    . "or deferred one after another while they run (deferred and run: bound by the deferring process). Claims: `core/examples/claims` queues {$p['claim_tasks']} no-op "
    . "tasks on one endpoint, then N clients, each a server of its own with its own connection and one slot, "
    . "take their slot as a task request does and claim and complete tasks one at a time (the two writes a "
    . "task of one request costs) for {$p['claim_seconds']} s or until the queue is empty: how many tasks one "
    . "database can hand out, however many web servers ask.\n\n"
    . "| | SQLite | PostgreSQL | PostgreSQL / SQLite |\n|---|---|---|---|\n";
foreach ($rows as $r) {
    $md .= '| ' . implode(' | ', $r) . " |\n";
}
$verdict = fn (bool $met): string => $met ? 'met' : '**missed**';
$pg = $t['postgres'];
$md .= sprintf("\nGoals on PostgreSQL: `defer()` at most 5× SQLite's (median, CLI): %.2f×, %s (%.2f× with one core "
    . "kept busy, %.2f× through the Unix socket). `serve()`'s batches at least as fast as one task per request: %.0f against %.0f tasks/s from a "
    . "backlog, %s; %.0f against %.0f deferred and run, %s.\n", $ratio, $verdict($ratio <= 5.0), $busyRatio, $socketRatio,
    $pg['drain_batched'], $pg['drain_single'],
    $verdict($pg['drain_batched'] >= $pg['drain_single']), $pg['batched'], $pg['single'],
    $verdict($pg['batched'] >= $pg['single']));
if (isset($d['sqlite-before'])) {
    $md .= sprintf("\nSQLite defer() of the build at commit %s: median %.1f µs, p99 %.1f µs; of this build: "
        . "%.1f µs, %.1f µs (%.2f× the median), timed in the same run.\n", $results['before'], $d['sqlite-before']['median_us'],
        $d['sqlite-before']['p99_us'], $d['sqlite']['median_us'], $d['sqlite']['p99_us'],
        $d['sqlite']['median_us'] / $d['sqlite-before']['median_us']);
}
echo "\n$md";
if (!$smoke) {
    file_put_contents(dirname(__DIR__) . '/docs/backends.md', $md);
    echo "Wrote docs/backends.md.\n";
}
