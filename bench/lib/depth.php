<?php

/**
 * Queue-depth benchmark steps, each its own process (a claim holds its task
 * request until the process ends):
 *   php depth.php fill DB BLACKHOLE N    defer until N tasks are queued
 *   php depth.php defer DB BLACKHOLE OPS per-call ns of OPS more defer() calls
 *   php depth.php claim DB BLACKHOLE OPS per-call ns of OPS accept() + complete()
 *   php depth.php schedules DB BLACKHOLE N  create N yearly schedules, each on its own endpoint
 * Tasks are due now; their requests go to BLACKHOLE, which never answers.
 */

declare(strict_types=1);

use AsyncEngine\Engine;

require __DIR__ . '/enqueue.php';

[, $step, $db, $blackHole, $n] = $argv;
$n = (int) $n;
const SECRET = 'bench-secret-0123456789';
Engine::configure(['database' => $db, 'base_url' => $blackHole, 'secret' => SECRET, 'max_workers' => 64,
    'max_queued' => 100000000]); // the depths measured go past the default limit
$defer = fn (int $i) => Engine::defer('/tasks.php', 'send-mail', AsyncEngine\Bench\ARGS);

switch ($step) {
    case 'fill':
        $missing = $n - Engine::stats()['queued'];
        for ($i = 0; $i < $missing; $i++) {
            $defer($i);
        }
        echo json_encode(Engine::stats()['queued']);
        break;
    case 'defer':
        echo json_encode(AsyncEngine\Bench\sample($n, $defer));
        break;
    case 'claim':
        // A fresh request for this process: kick() sends one where a slot is
        // free; arrive as that signed request, as the endpoint would.
        // The black hole never answers, so earlier deliveries timed out and
        // backed the endpoint off; an endpoint that answers has no backoff.
        // Slots still held by earlier steps' requests (the black hole keeps
        // them until they expire) could leave none free: this database is the
        // benchmark's own, so they go.
        $pdo = AsyncEngine\Bench\open($db);
        $pdo->exec('DELETE FROM slots');
        $pdo->exec("UPDATE endpoints SET failures = 0, retry_at = NULL, next_due = (SELECT min(due_at) FROM tasks
            WHERE state = 'queued' AND tasks.endpoint = endpoints.endpoint AND tasks.site = endpoints.site)");
        Engine::kick();
        $slot = $pdo->query("SELECT id, endpoint FROM slots WHERE state = 'sent' ORDER BY created_at DESC LIMIT 1")->fetch();
        $time = time();
        $_SERVER['REQUEST_METHOD'] = 'POST';
        $_SERVER['REQUEST_URI'] = $slot['endpoint'];
        $_SERVER['HTTP_X_ASYNC_ENGINE_SLOT'] = $slot['id'];
        $_SERVER['HTTP_X_ASYNC_ENGINE_TIME'] = (string) $time;
        $_SERVER['HTTP_X_ASYNC_ENGINE_SIGNATURE'] = hash_hmac('sha256', "{$slot['id']}\n{$slot['endpoint']}\n$time", SECRET);
        echo json_encode(AsyncEngine\Bench\sample($n, function (int $i): void {
            $task = Engine::accept() ?? throw new RuntimeException('nothing to claim');
            $task->complete();
        }));
        break;
    case 'schedules':
        for ($i = 0; $i < $n; $i++) {
            Engine::schedule("bench-$i", '0 0 1 1 *', "/cron-$i.php", 'job');
        }
        echo json_encode(count(Engine::schedules()));
        break;
    default:
        throw new InvalidArgumentException("unknown step $step");
}
