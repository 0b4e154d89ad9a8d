<?php

/** The benchmark report: docs/benchmarks.md, its SVG chart, README's headline. */

declare(strict_types=1);

namespace AsyncEngine\Bench;

/** The ab command a run's baselines were measured with: keep-alive (-k) from the runs that record it. */
function abCommand(array $throughput): string
{
    return ($throughput['keepalive'] ?? false) ? 'ab -k -c 4' : 'ab -c 4';
}

function markdown(array $r): string
{
    $m = $r['machine'];
    $p = $r['params'];
    $md = "# Benchmarks\n\n";
    $md .= $r['smoke'] ? "**Smoke run: small counts, numbers not meaningful.**\n\n" : '';
    $md .= "Measured by `bench/run` on {$m['date']} (commit `{$m['commit']}`), everything in one run on one machine:\n"
        . "{$m['cpu']}, {$m['cores']} cores, {$m['memory_gib']} GiB; {$m['os']}; PHP {$m['php']}; SQLite {$m['sqlite']}; "
        . "{$m['nginx']}. Load average (1 min) at the start: {$m['load']}. The run took " . round($r['seconds']) . " s.\n\n"
        . "```sh\nbench/run            # this report (docs/benchmarks.md, .svg, .json) and README's headline numbers\n"
        . "bench/run --smoke    # every part with small counts (~10 s), as CI runs it; writes nothing\n```\n\n"
        . "![Enqueue cost and throughput](benchmarks.svg)\n\n";

    $md .= "## Goals\n\n| | goal | measured | baseline | ratio | |\n|---|---|---|---|---|---|\n";
    foreach ($r['goals'] as $g) {
        $md .= "| {$g['name']} | {$g['goal']} | {$g['measured']} | {$g['baseline']} | {$g['ratio']} | "
            . ($g['met'] ? 'met' : '**missed**') . " |\n";
    }

    $md .= whyMissed($r);

    $md .= "\n## 1. Cost of enqueueing, on the page's critical path\n\n"
        . "Per call, the same job (three small arguments); {$p['calls']} calls per method "
        . "({$p['spawn_calls']} for the spawn, {$p['boot_calls']} for the spawn to a booting target), in one CLI process and inside php-fpm requests "
        . "(chunks of {$p['chunk']} calls). Tasks are due at once; their requests go to a port that never "
        . "answers, so nothing runs during the measurement.\n\n"
        . "| method | CLI median | CLI p99 | php-fpm median | php-fpm p99 | CLI median vs defer() |\n|---|---|---|---|---|---|\n";
    $defer = $r['enqueue']['cli']['defer']['median_us'];
    foreach (METHODS as $method => $label) {
        $c = $r['enqueue']['cli'][$method];
        $f = $r['enqueue']['fpm'][$method];
        $md .= sprintf("| %s | %s | %s | %s | %s | %.2f× |\n", $label, us($c['median_us']), us($c['p99_us']),
            us($f['median_us']), us($f['p99_us']), $c['median_us'] / $defer);
    }
    $md .= "\n- `Engine::defer()`: validates, JSON-encodes the args, inserts the task and, when a slot is free, "
        . "reserves it and hands the signed request to the process's background thread (one write transaction).\n"
        . "- PDO INSERT: the same row into the engine's own `tasks` table and indexes, prepared once, same pragmas "
        . "(WAL, synchronous NORMAL).\n"
        . "- PDO INSERT into a one-index queue table: the least a queue can be (an integer key and the one index "
        . "its claims need), prepared once, same pragmas: the floor a pure-PHP queue pays, and the baseline of the goal.\n"
        . "- Database queue: as Laravel's database driver (and, in spirit, QueuedJobs): a JSON payload around the "
        . "serialised job object, an `INSERT` into a `jobs` table prepared per call.\n"
        . "- Loopback spawn: as WP-Cron's `spawn_cron()`, a blocking curl POST to `cron.php` on the same "
        . "nginx + php-fpm with a 10 ms timeout (a new connection each time). `cron.php` answers at once: the "
        . "cheapest a spawn can be, and the baseline of the goal. A real `wp-cron.php` loads WordPress before it "
        . "answers, so the caller waits out its 10 ms timeout: the second spawn row.\n";

    $t = $r['throughput'];
    $md .= "\n## 2. Throughput\n\n"
        . "{$t['tasks']} no-op tasks run through nginx + php-fpm (pm static, 4 workers, `max_workers` 4), measured two "
        . "ways. *From a backlog*: the tasks are deferred due at one instant (`at`), and the time runs from that instant "
        . "to the last completion: what the server itself sustains. *Deferred and run*: one CLI process defers them "
        . "one after another while the server runs them, from the first `defer()` to the last completion; the "
        . "deferring process shares the two cores and, while the queue is short, each task gets a request of its "
        . "own. `hello.php` through the same server with `" . abCommand($t) . " -n {$t['tasks']}` "
        . (($t['keepalive'] ?? false)
            ? "(kept-alive connections, as the engine's self-requests).\n\n"
            : "(a new connection per request, where the engine's self-requests keep theirs alive: the easier "
                . "baseline, by 12–16 % in later measurements).\n\n")
        . "| | per second | vs hello.php |\n|---|---|---|\n"
        . sprintf("| hello.php requests | %.0f | 1.00× |\n", $t['hello']);
    foreach (['drain_single' => 'tasks from a backlog, one per request',
        'drain_batched' => 'tasks from a backlog, `serve()` defaults (batches of up to 100)',
        'single' => 'tasks deferred and run, one per request',
        'batched' => 'tasks deferred and run, `serve()` defaults'] as $k => $label) {
        $md .= sprintf("| %s | %.0f | %.2f× |\n", $label, $t[$k], $t[$k] / $t['hello']);
    }
    $md .= "\nTasks that take time use the server's workers side by side: {$t['slow_tasks']} tasks that each sleep "
        . "20 ms, from a backlog with `serve()`'s defaults, against `sleep.php`, a page that sleeps 20 ms, under "
        . "`" . abCommand($t) . " -n {$t['slow_tasks']}`"
        . " (4 workers: at most 200 per second either way).\n\n"
        . "| | per second | vs sleep.php |\n|---|---|---|\n"
        . sprintf("| sleep.php requests | %.0f | 1.00× |\n", $t['slow_page'])
        . sprintf("| 20-ms tasks from a backlog | %.0f | %.2f× |\n", $t['slow'], $t['slow'] / $t['slow_page']);

    $l = $r['latency'];
    $md .= "\n## 3. Latency: enqueue to start\n\n"
        . "From `defer()` to the first line of the task's handler, same server.\n\n"
        . "| | p50 | p99 |\n|---|---|---|\n"
        . sprintf("| idle server, one task at a time (%d tasks) | %.2f ms | %.2f ms |\n", $l['idle']['tasks'],
            $l['idle']['p50_ms'], $l['idle']['p99_ms'])
        . sprintf("| backlog: %d tasks deferred at once | %.0f ms | %.0f ms |\n", $l['backlog']['tasks'],
            $l['backlog']['p50_ms'], $l['backlog']['p99_ms'])
        . sprintf("| cron-driven runner, every minute (model: uniform 0–60 s) | %.0f ms | %.0f ms |\n",
            $l['cron']['p50_ms'], $l['cron']['p99_ms'])
        . sprintf("\nIdle, the engine starts a task %.0f× sooner than a minute cron does on average.\n",
            $l['cron']['p50_ms'] / $l['idle']['p50_ms']);

    $md .= "\n## 4. Scale\n\nCost per call with the queue already holding N due tasks ({$p['depth_ops']} calls each; "
        . "claim = `accept()` + `complete()` inside one task request).\n\n"
        . "| queued | defer() median | defer() p99 | claim median | claim p99 |\n|---|---|---|---|---|\n";
    foreach ($r['depth'] as $depth => $d) {
        $md .= sprintf("| %s | %s | %s | %s | %s |\n", number_format($depth), us($d['defer']['median_us']),
            us($d['defer']['p99_us']), us($d['claim']['median_us']), us($d['claim']['p99_us']));
    }
    $sc = $r['schedules'];
    $md .= sprintf("\nWith %s recurring schedules (each a pending occurrence on its own endpoint) beside 1,000 queued "
        . "tasks, against a database without them (%d rounds taken in turns; the middle round's median):\n\n"
        . "| schedules | defer() median | claim median |\n|---|---|---|\n", number_format($sc['count']),
        $r['params']['schedule_rounds'] ?? 3);
    foreach (['without' => 0, 'with' => $sc['count']] as $k => $n) {
        $md .= sprintf("| %s | %s | %s |\n", number_format($n), us($sc[$k]['defer']['median_us']), us($sc[$k]['claim']['median_us']));
    }
    $served = isset($r['memory_pages'])
        ? sprintf('%d times each, %d at a time (so every worker serves both),', $r['memory_pages']['requests'],
            $r['memory_pages']['concurrency'])
        : '50 times each, one after another (so some workers may have served neither),';
    $md .= "\nResident memory. The php-fpm workers, with and without the extension, serve `hello.php` and "
        . "`router.php` (a page that reads `\$_SERVER`, as every routed application does) $served before they "
        . "are measured, so PHP's own pages cost the same on both sides:\n\n| process | RSS |\n|---|---|\n";
    foreach ($r['memory'] as $what => $kb) {
        $md .= sprintf("| %s | %.1f MiB |\n", $what, $kb / 1024);
    }

    if (isset($r['hub'])) {
        $h = $r['hub'];
        $md .= "\n## Live-events hub\n\n"
            . "The Mercure-compatible hub hosted by one of the 4 php-fpm workers (`hub_listen`), driven by "
            . "`core/examples/hub_load.rs` on the same machine. Idle connections are subscriptions that receive "
            . "nothing; each one is recorded for presence (one write to the database), which is what opening them costs. "
            . "Latency is from `Engine::publish()` returning to the event arriving, updates 10 ms apart; fan-out "
            . "publishes the same number of updates back to back.\n\n"
            . "| idle connections held | opened in | host RSS growth | per connection | subscribers | latency p50 | p99 | fan-out |\n"
            . "|---|---|---|---|---|---|---|---|\n"
            . sprintf("| %s | %.1f s | %.1f MiB | %.1f KiB | %d | %.2f ms | %.2f ms | %s deliveries/s |\n",
                number_format($h['idle']), $h['idle_seconds'], $h['rss_growth_kb'] / 1024,
                $h['rss_growth_kb'] / max(1, $h['idle']), $h['subscribers'], $h['p50_ms'], $h['p99_ms'],
                number_format($h['fanout_per_s']))
            . "\nFor reference only (another machine, another program): Mercure's documentation reports about 40,000 "
            . "concurrent connections held by its hub on an AWS EC2 t3.micro.\n";
    }

    $c = $r['concurrency'];
    $md .= "\n## 5. Concurrency\n\n"
        . "{$c['processes']} CLI processes each defer " . ($c['tasks'] / $c['processes']) . " tasks as fast as they can "
        . "while the 4 php-fpm workers claim and run them.\n\n"
        . "| tasks | deferred per second (all processes) | completed per second | busy naps, deferrers | "
        . "busy naps, workers | errors |\n|---|---|---|---|---|---|\n"
        . sprintf("| %d | %.0f | %.0f | %d | %d | %d |\n", $c['tasks'], $c['deferred_per_s'], $c['done_per_s'],
            $c['naps_deferrers'], $c['naps_workers'], $c['errors'])
        . "\nA busy nap is one wait (20 µs doubling to 1 ms) of a writer for another's lock — SQLite's SQLITE_BUSY, "
        . "retried inside the engine (`Engine::stats()['busy_naps']`); errors are calls that gave up after "
        . "`busy_timeout`.\n"
        . (isset($c['naps_read_around'])
            ? "The workers' naps are read before and after the run, not by the task requests, which run as in the "
                . "uncontended run the goal compares with.\n"
            : "The workers' naps were read by every task request (a `stats()` call each, which counts every task), "
                . "a cost the uncontended run the goal compares with did not pay.\n")
        . (isset($c['started_before_clock'])
            ? "The deferring processes start and open the database before the clock starts, and read their naps "
                . "after it stops, as the one process of the uncontended run is already running.\n"
            : "The clock ran from the start of the deferring processes (PHP's start-up and each process's "
                . "`stats()` calls inside it).\n");
    return $md;
}

/** What stands behind each missed goal, from what this harness measures. */
function whyMissed(array $r): string
{
    $why = [
        'loopback spawn' => 'The baseline is the cheapest spawn there can be: `cron.php` answers at once, so a spawn '
            . 'costs one local HTTP round trip (a few hundred µs). A real `wp-cron.php` loads WordPress before it '
            . 'answers and the caller waits out its 10 ms timeout; against that spawn (second spawn row) `defer()` is '
            . sprintf('%.0f× faster.', $r['enqueue']['cli']['spawn-boot']['median_us'] / $r['enqueue']['cli']['defer']['median_us']),
        'one-index queue table' => '`defer()` writes three b-trees where the baseline writes two: the task row '
            . '(keyed by its public text id), the claim index, and the endpoint row that counts its queue for '
            . '`max_queued` and holds its next due time (what lets a server find due work without scanning tasks); '
            . 'it also validates the call, encodes the args and checks for a free slot. Its commit writes the three '
            . 'pages in two system calls (the baseline\'s two pages take four), but each page is the kernel\'s work '
            . 'all the same. Reaching 1.5× needs no per-endpoint counter (no `max_queued` by default), or '
            . 'buffering tasks in memory, which would lose them with the process.',
        'processes deferring' => (isset($r['concurrency']['started_before_clock'])
                ? 'The contended run\'s 16 PHP processes (started and connected before its clock starts): '
                : 'The contended run starts 16 PHP processes (their start is inside its time) and ')
            . 'their `defer()` calls take turns at SQLite\'s one write lock with the workers\' claims: about one busy '
            . 'nap per call, a wait of 20 µs or more each, on 2 cores shared with nginx and 4 workers. The uncontended '
            . 'rate it is compared with is one deferring process, which meets none of those waits.',
        'deferred and run, serve()' => 'A batch of quick tasks costs about one database write per 16 tasks, so the '
            . 'run is bound by the one process deferring them: its `defer()` calls, contended by the workers\' writes '
            . 'on the same SQLite file and sharing 2 cores with nginx and 4 workers, and, while the queue is short, '
            . 'a request of its own for each task. From a backlog the same server runs them faster than hello.php.',
        'one per request' => 'Each task is a full request through nginx and php-fpm, like `hello.php`, plus '
            . 'two write transactions on the shared database (claim; end of the task with the slot handed to the '
            . 'next request). The requests alone pass at about 0.9× `hello.php` (a probe with no database work); '
            . 'the transactions are what costs. Each starts after another process\'s commit, so SQLite reads every '
            . 'page it touches again (about 35 per task, over eight b-trees), and together they hold the one write '
            . 'lock about 270 µs per task (docs/architecture.md, "What one task per request costs").',
        'RSS' => 'The extension\'s code (2.6 MB, size-optimised, mapped in every worker), libsqlite3, its background '
            . 'thread and runtime, and two SQLite connections per worker (the pages\' and the background thread\'s, '
            . '512 KiB of page cache each) make up the difference.',
    ];
    $md = '';
    foreach ($r['goals'] as $g) {
        foreach ($why as $key => $text) {
            if (!$g['met'] && str_contains($g['name'], $key)) {
                $md .= "\n**{$g['name']}: missed.** $text\n";
            }
        }
    }
    return $md;
}

/** Two panels: enqueue medians (log scale) and throughput. */
function chart(array $r): string
{
    $w = 760;
    $row = 22;
    $left = 250;
    $bars = [];
    $short = ['defer' => 'Engine::defer()', 'pdo' => 'PDO INSERT', 'pdo1' => 'PDO INSERT, one index', 'dbqueue' => 'database queue',
        'spawn' => 'loopback spawn', 'spawn-boot' => 'spawn, booting target'];
    foreach ($short as $method => $label) {
        foreach (['cli' => 'CLI', 'fpm' => 'php-fpm'] as $where => $name) {
            $bars[] = ["$label — $name", $r['enqueue'][$where][$method]['median_us']];
        }
    }
    $max = max(array_column($bars, 1));
    $min = max(1.0, min(array_column($bars, 1)) / 2);
    $scale = fn (float $v) => ($w - $left - 90) * log($v / $min) / log($max / $min);
    $svg = '';
    $y = 40;
    $svg .= "<text x=\"10\" y=\"22\" class=\"h\">Enqueue cost per call, median (log scale; shorter is better)</text>";
    foreach ($bars as $i => [$label, $v]) {
        $len = max(2, $scale($v));
        $class = str_starts_with($label, 'Engine') ? 'a' : 'b';
        $svg .= sprintf('<text x="%d" y="%d" class="l">%s</text><rect x="%d" y="%d" width="%.1f" height="%d" class="%s"/>'
            . '<text x="%.1f" y="%d" class="v">%s</text>', $left - 8, $y + 14, htmlspecialchars($label), $left, $y,
            $len, $row - 6, $class, $left + $len + 6, $y + 14, us($v));
        $y += $row;
    }
    $y += 30;
    $svg .= "<text x=\"10\" y=\"$y\" class=\"h\">Through nginx + php-fpm, 4 workers (per second; longer is better)</text>";
    $y += 18;
    $t = $r['throughput'];
    $rows = [['hello.php requests', $t['hello'], 'b'], ['backlog, one per request', $t['drain_single'], 'a'],
        ['backlog, serve() defaults', $t['drain_batched'], 'a'], ['deferred and run, one per request', $t['single'], 'a'],
        ['deferred and run, serve()', $t['batched'], 'a']];
    $tmax = max(array_column($rows, 1));
    foreach ($rows as [$label, $v, $class]) {
        $len = max(2, ($w - $left - 90) * $v / $tmax);
        $svg .= sprintf('<text x="%d" y="%d" class="l">%s</text><rect x="%d" y="%d" width="%.1f" height="%d" class="%s"/>'
            . '<text x="%.1f" y="%d" class="v">%.0f/s</text>', $left - 8, $y + 14, $label, $left, $y, $len, $row - 6,
            $class, $left + $len + 6, $y + 14, $v);
        $y += $row;
    }
    $h = $y + 10;
    return <<<SVG
        <svg xmlns="http://www.w3.org/2000/svg" width="$w" height="$h" viewBox="0 0 $w $h" font-family="DejaVu Sans, sans-serif">
        <style>.h{font-size:14px;font-weight:bold;fill:#1d2330}.l{font-size:12px;fill:#1d2330;text-anchor:end}
        .v{font-size:12px;fill:#5b6475}.a{fill:#3c7dd9}.b{fill:#a9b1bd}</style>
        <rect width="100%" height="100%" fill="#fff"/>
        $svg
        </svg>

        SVG;
}

/** Replaces README's headline numbers between the bench markers. */
function updateReadme(string $file, array $r): void
{
    $readme = (string) file_get_contents($file);
    $cli = $r['enqueue']['cli'];
    $t = $r['throughput'];
    $lines = [
        '<!-- bench:start (written by bench/run) -->',
        sprintf('`bench/run` on this repository\'s 2-core build machine (%s; all numbers from one run, '
            . '[full report](docs/benchmarks.md)):', $r['machine']['date']),
        '',
        sprintf('- `Engine::defer()` costs **%s** per call (median, CLI), %.2f× a PDO SQLite INSERT into a one-index '
            . 'queue table (%s); a WP-Cron-style loopback spawn costs %.0f× as much (%s) to a target that answers at once, '
            . '%.0f× (%s) to one that boots like WordPress.', us($cli['defer']['median_us']),
            $cli['defer']['median_us'] / $cli['pdo1']['median_us'], us($cli['pdo1']['median_us']),
            $cli['spawn']['median_us'] / $cli['defer']['median_us'], us($cli['spawn']['median_us']),
            $cli['spawn-boot']['median_us'] / $cli['defer']['median_us'], us($cli['spawn-boot']['median_us'])),
        sprintf('- A task starts **%.2f ms** after `defer()` (p50, idle server) — a minute cron averages 30 s.',
            $r['latency']['idle']['p50_ms']),
        sprintf('- Through nginx + php-fpm with 4 workers, from a backlog: **%.0f** no-op tasks/s one per request, '
            . '**%.0f**/s in `serve()` with its defaults, next to %.0f `hello.php` requests/s (%.2f× and %.2f×); '
            . 'deferred from one CLI process while they run: %.0f/s and %.0f/s.', $t['drain_single'], $t['drain_batched'],
            $t['hello'], $t['drain_single'] / $t['hello'], $t['drain_batched'] / $t['hello'], $t['single'], $t['batched']),
        '- Goals: ' . implode('; ', array_map(fn ($g) => "{$g['name']} {$g['ratio']} ({$g['goal']}: "
            . ($g['met'] ? 'met' : '**missed**') . ')', $r['goals'])) . '.',
        '<!-- bench:end -->',
    ];
    $new = preg_replace('/<!-- bench:start.*?<!-- bench:end -->/s', implode("\n", $lines), $readme, 1, $count);
    if ($count !== 1) {
        throw new \RuntimeException("README.md has no <!-- bench:start --> ... <!-- bench:end --> markers");
    }
    file_put_contents($file, $new);
}
