<?php

declare(strict_types=1);

// The chaos runs' task endpoint: ordinary work that records each run, and
// tasks that fail in every way a PHP request can.
use AsyncEngine\Engine;
use AsyncEngine\RequestRejected;
use AsyncEngine\Task;

$work = function (array $args, Task $task): void {
    if ($args['ms'] > 0) {
        usleep($args['ms'] * 1000);
    }
    file_put_contents($args['effects'], "$task->id $task->attempt\n", FILE_APPEND | LOCK_EX);
};

try {
    Engine::serve([
        'work' => $work,
        'slow' => function (array $args, Task $task) use ($work): void {
            // Tells the run which worker runs it, so it can move the deadline.
            file_put_contents(dirname($args['effects']) . "/slow-$task->id-$task->attempt", (string) getmypid());
            $work($args, $task);
        },
        'throw' => function (): void {
            throw new RuntimeException('chaos: thrown on purpose');
        },
        'exit' => function (): void {
            exit(0);
        },
        'fatal' => function (): void {
            chaos_undefined_function();
        },
        'oom' => function (): void {
            ini_set('memory_limit', '32M');
            $hog = [];
            while (true) {
                $hog[] = str_repeat('x', 1 << 20);
            }
        },
        'timeout' => function (): void {
            set_time_limit(1);
            while (true) {
                hash('sha256', 'spin');
            }
        },
    ], ['max_tasks' => 5]);
} catch (RequestRejected $e) {
    http_response_code(403);
    echo $e->getMessage();
}
