<?php

// Enqueue cost inside a php-fpm request: ?method=...&calls=N&dir=...&blackhole=...&spawn=...
// answers the per-call times in nanoseconds as JSON.

declare(strict_types=1);

require dirname(__DIR__) . '/lib/enqueue.php';

set_time_limit(0);
header('Content-Type: application/json');
$call = AsyncEngine\Bench\enqueuer($_GET['method'], $_GET['dir'], $_GET['blackhole'], $_GET['spawn']);
echo json_encode(AsyncEngine\Bench\sample((int) $_GET['calls'], $call));
