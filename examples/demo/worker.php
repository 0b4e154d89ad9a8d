<?php

declare(strict_types=1);

// The demo's task endpoint: runs tasks for the engine's signed self-requests,
// 403 for anything else.

use AsyncEngine\Engine;
use AsyncEngine\RequestRejected;

try {
    Engine::serve([
        'fast' => function (array $args): void {
            usleep(random_int(5, 40) * 1000);
        },
        'slow' => function (array $args): void {
            usleep($args['ms'] * 1000);
        },
        'failing' => function (array $args): void {
            throw new RuntimeException("payment gateway declined order {$args['order']}");
        },
    ]);
} catch (RequestRejected $e) {
    http_response_code(403);
    echo "Forbidden\n";
}
