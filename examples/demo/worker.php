<?php

// The demo's task endpoint: runs tasks for genuine self-requests, 403 otherwise.
use AsyncEngine\Engine;
use AsyncEngine\RequestRejected;

try {
    Engine::serve([
        'fast' => function (array $args): void {
            error_log("fast task {$args['n']}");
        },
        'slow' => function (array $args): void {
            sleep(1);
            error_log("slow task {$args['n']}");
        },
    ]);
} catch (RequestRejected $e) {
    http_response_code(403);
    echo $e->getMessage();
}
