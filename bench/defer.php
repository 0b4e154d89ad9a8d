<?php

/**
 * Cost of Engine::defer() per call, next to a plain PDO SQLite INSERT of the
 * same row into the same schema (the floor a pure-PHP queue pays), both in
 * one PHP process and one run. Usage: php bench/defer.php [calls]
 */

declare(strict_types=1);

use AsyncEngine\Engine;

$calls = (int) ($argv[1] ?? 100000);
$dir = sys_get_temp_dir() . '/async-engine-bench-' . getmypid();
mkdir($dir);

function percentiles(array $ns): array
{
    sort($ns);
    $n = count($ns);
    return ['median_us' => $ns[intdiv($n, 2)] / 1000, 'p99_us' => $ns[(int) floor($n * 0.99)] / 1000];
}

function measure(int $calls, callable $call): array
{
    $times = [];
    for ($i = 0; $i < $calls; $i++) {
        $t = hrtime(true);
        $call($i);
        $times[] = hrtime(true) - $t;
    }
    return percentiles($times);
}

$args = ['user' => 42, 'template' => 'welcome', 'locale' => 'en_NZ'];

// async-engine: due now, so slots fill up to max_workers and the rest queue.
Engine::configure(['database' => "$dir/engine.sqlite"]);
$engine = measure($calls, fn (int $i) => Engine::defer('/worker.php', 'send-mail', $args));

// PDO into the same schema (copied from the engine's database), same pragmas.
$pdo = new PDO("sqlite:$dir/pdo.sqlite");
$pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
$pdo->exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000');
$schema = (new PDO("sqlite:$dir/engine.sqlite"))->query("SELECT sql FROM sqlite_master WHERE name LIKE 'tasks%' AND sql IS NOT NULL")->fetchAll(PDO::FETCH_COLUMN);
foreach ($schema as $sql) {
    $pdo->exec($sql);
}
$insert = $pdo->prepare("INSERT INTO tasks (id, endpoint, name, args, state, priority, due_at, max_attempts, timeout, created_at, updated_at)
    VALUES (?, '/worker.php', 'send-mail', ?, 'queued', 0, ?, 5, 300000, ?, ?)");
$pdoResult = measure($calls, function (int $i) use ($insert, $args) {
    $now = (int) (microtime(true) * 1000);
    $insert->execute([bin2hex(random_bytes(13)), json_encode($args), $now, $now, $now]);
});

exec('rm -rf ' . escapeshellarg($dir));
$ratio = $engine['median_us'] / $pdoResult['median_us'];
printf("calls: %d\n", $calls);
printf("Engine::defer()   median %7.2f us   p99 %7.2f us\n", $engine['median_us'], $engine['p99_us']);
printf("PDO INSERT        median %7.2f us   p99 %7.2f us\n", $pdoResult['median_us'], $pdoResult['p99_us']);
printf("ratio (median)    %.2fx\n", $ratio);
