<?php

// Timing no-op tasks through a server, shared by bench/run.php and
// bench/backends.php.

declare(strict_types=1);

namespace AsyncEngine\Bench;

use AsyncEngine\Engine;

/**
 * Whether any task is still queued or running: two probes of partial
 * indexes (tasks_claim, tasks_state; SQLite uses the latter only when the
 * query repeats its condition). `state IN (...)` would scan every task, and
 * the measuring process would take CPU from the server it times.
 */
const PENDING_SQL = "SELECT EXISTS (SELECT 1 FROM tasks WHERE state = 'queued') "
    . "OR EXISTS (SELECT 1 FROM tasks WHERE state = 'running' AND state <> 'queued')";

/**
 * Waits until $pending (PENDING_SQL, prepared) says nothing is left,
 * checking every $poll seconds; returns how long that took. Throws after
 * $limit seconds.
 */
function waitIdle(\PDOStatement $pending, float $limit, float $poll): float
{
    $t = microtime(true);
    do {
        $pending->execute();
        $busy = (bool) $pending->fetchColumn();
        $pending->closeCursor(); // an open statement would hold a read snapshot and starve checkpoints
        if (!$busy) {
            return microtime(true) - $t;
        }
        usleep((int) ($poll * 1e6));
    } while (microtime(true) - $t < $limit);
    throw new \RuntimeException('tasks did not finish: ' . json_encode(Engine::stats()));
}

/**
 * Tasks ($task: no-op ones unless named) completed per second; $wait waits
 * until they are done.
 * Deferred and run ($backlogPerTask null): timed from the first defer().
 * From a backlog: the tasks are queued due at one instant (`at`), allowing
 * $backlogPerTask seconds per defer() plus 0.5 s, and timed from that
 * instant, so the server alone is measured and the cost of deferring them
 * is not.
 */
function noopsPerSecond(int $n, string $endpoint, ?float $backlogPerTask, callable $wait, string $task = 'noop'): float
{
    $at = microtime(true) + ($backlogPerTask === null ? 0 : 0.5 + $n * $backlogPerTask);
    for ($i = 0; $i < $n; $i++) {
        Engine::defer($endpoint, $task, [], $backlogPerTask === null ? [] : ['at' => $at]);
    }
    if ($backlogPerTask !== null && microtime(true) >= $at) {
        throw new \RuntimeException("deferring the backlog took longer than its margin ($backlogPerTask s a task)");
    }
    usleep((int) max(0, ($at - microtime(true)) * 1e6));
    $wait();
    return $n / (microtime(true) - $at);
}
