<?php

// The benchmark's task endpoint: no-op tasks, 20-ms tasks (as sleep.php),
// and tasks that stamp their start time. ?batch=N: at most N tasks per request (serve()'s defaults
// without it).

use AsyncEngine\Engine;

Engine::serve([
    'noop' => fn () => null,
    'sleep20' => fn () => usleep(20000),
    'stamp' => function (array $args): void {
        file_put_contents($args['file'], sprintf("%.6f %.6f\n", $args['at'], microtime(true)), FILE_APPEND | LOCK_EX);
    },
], isset($_GET['batch']) ? ['max_tasks' => max(1, (int) $_GET['batch'])] : []);
