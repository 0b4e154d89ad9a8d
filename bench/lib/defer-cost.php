<?php

/**
 * Times Engine::defer() from the CLI: `php defer-cost.php DATABASE BLACKHOLE CALLS`
 * prints the nanoseconds of each call as JSON (after 200 warm-up calls).
 * Task requests go to BLACKHOLE (a port that never answers), so no task runs.
 */

declare(strict_types=1);

use AsyncEngine\Engine;

[, $database, $blackHole, $calls] = $argv;
Engine::configure(['database' => $database, 'base_url' => $blackHole, 'secret' => 'bench-secret-0123456789']);
$args = ['user' => 42, 'template' => 'welcome', 'locale' => 'en_NZ'];
for ($i = 0; $i < 200; $i++) {
    Engine::defer('/tasks.php', 'send-mail', $args);
}
$times = [];
for ($i = 0; $i < (int) $calls; $i++) {
    $t = hrtime(true);
    Engine::defer('/tasks.php', 'send-mail', $args);
    $times[] = hrtime(true) - $t;
}
echo json_encode($times);
