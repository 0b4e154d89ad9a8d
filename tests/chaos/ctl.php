<?php

declare(strict_types=1);

// What the chaos run does to the engine from outside, run as the engine's user:
//   kick                      Engine::kick() as cron would; prints how many it sent
//   stats                     Engine::stats() as JSON
//   jump <id>                 moves a running task's lease deadline into the past
//                             (the clock jumping past it while the task still runs)
//   hold <seconds>            holds the database's write lock that long
//   slow <n> <ids> <effects>  defers n slow tasks, recording them in the ids file
//   account <dir>             accounts for every task (see account()), as JSON

use AsyncEngine\Engine;
use AsyncEngine\Chaos\Workload;
use AsyncEngine\Tests\Support\Database;

require dirname(__DIR__) . '/php/autoload.php';
require __DIR__ . '/lib/Workload.php';

$database = (string) ini_get('async_engine.database');
switch ($argv[1] ?? '') {
    case 'kick':
        echo Engine::kick(), "\n";
        break;
    case 'stats':
        echo json_encode(Engine::stats()), "\n";
        break;
    case 'jump':
        $jump = Database::open($database)->prepare("UPDATE tasks SET lease_until = 0 WHERE state = 'running' AND id = ?");
        $jump->execute([$argv[2]]);
        echo $jump->rowCount(), "\n";
        break;
    case 'hold':
        $db = new SQLite3($database);
        $db->busyTimeout(10000);
        $db->exec('BEGIN IMMEDIATE');
        echo "held\n";
        usleep((int) ((float) $argv[2] * 1e6));
        $db->exec('COMMIT');
        break;
    case 'slow':
        for ($i = 0; $i < (int) $argv[2]; $i++) {
            file_put_contents($argv[3], Workload::defer('slow', $argv[4]) . " slow\n", FILE_APPEND);
        }
        break;
    case 'account':
        echo json_encode(account($argv[2], $database), JSON_PRETTY_PRINT), "\n";
        break;
    default:
        fwrite(STDERR, "usage: ctl.php kick|stats|jump <id>|hold <seconds>|account <dir>\n");
        exit(2);
}

/**
 * Every task the deferrers recorded (ids-*.txt) and every task in the
 * database, each checked against what its kind must end as: work done and
 * run at least once; a task meant to fail dead with a reason. Lost: a
 * recorded id the database no longer has, or one that ended otherwise.
 */
function account(string $dir, string $database): array
{
    $recorded = [];
    foreach (glob("$dir/ids-*.txt") as $file) {
        foreach (file($file, FILE_IGNORE_NEW_LINES) as $line) {
            if (preg_match(Workload::RECORD, $line, $m)) {
                $recorded[$m[1]] = $m[2];
            }
        }
    }
    $runs = [];
    foreach (is_file("$dir/effects.txt") ? file("$dir/effects.txt", FILE_IGNORE_NEW_LINES) : [] as $line) {
        $id = strtok($line, ' ');
        $runs[$id] = ($runs[$id] ?? 0) + 1;
    }
    // Read straight from the database, and closed before the engine opens it:
    // two SQLite libraries in one process must not hold the same file at once.
    $db = Database::open($database);
    $inDb = [];
    $counted = [];
    foreach ($db->query('SELECT id, name, state FROM tasks') as $row) {
        $inDb[$row['id']] = $row['name'];
        $counted[$row['state']] = ($counted[$row['state']] ?? 0) + 1;
    }
    $db = null;
    $report = ['recorded' => count($recorded), 'unrecorded' => 0, 'states' => [], 'runs' => array_sum($runs),
        'duplicates' => 0, 'lost' => [], 'stuck' => [], 'unfinished' => [], 'other_reason' => 0, 'reasons' => [],
        'miscounted' => []];
    // stats() keeps finished tasks' counts (triggers, through every fault
    // the scenario made); once nothing moves they are the tasks' own.
    if (($counted['queued'] ?? 0) + ($counted['running'] ?? 0) === 0) {
        $stats = Engine::stats();
        foreach (['done', 'dead', 'cancelled'] as $state) {
            if ($stats[$state] !== ($counted[$state] ?? 0)) {
                $report['miscounted'][] = "$state: stats() says {$stats[$state]}, the tasks table holds " . ($counted[$state] ?? 0);
            }
        }
    }
    foreach ($inDb + $recorded as $id => $kind) {
        $report['unrecorded'] += isset($recorded[$id]) ? 0 : 1;
        $status = Engine::status((string) $id);
        if ($status === null) {
            $report['lost'][] = "$id ($kind): not in the database";
            continue;
        }
        $state = $status['state'];
        $report['states'][$state] = ($report['states'][$state] ?? 0) + 1;
        $ran = $runs[$id] ?? 0;
        $report['duplicates'] += max(0, $ran - 1);
        if ($state === 'running') {
            $report[$status['lease_until'] < microtime(true) ? 'stuck' : 'unfinished'][] = "$id ($kind)";
        } elseif ($state === 'queued') {
            $report['unfinished'][] = "$id ($kind)";
        } elseif (isset(Workload::FAILURES[$kind])) {
            $error = (string) $status['last_error'];
            if ($state !== 'dead' || $error === '') {
                $report['lost'][] = "$id ($kind): $state, meant to die with a reason";
            } elseif (!str_contains($error, Workload::FAILURES[$kind])) {
                $report['other_reason']++;
            }
            $reason = preg_replace('/\d+/', 'N', substr($error, 0, 110));
            $report['reasons'][$reason] = ($report['reasons'][$reason] ?? 0) + 1;
        } elseif ($state !== 'done' || $ran === 0) {
            $report['lost'][] = "$id ($kind): $state after $ran run(s): {$status['last_error']}";
        }
    }
    return $report;
}
