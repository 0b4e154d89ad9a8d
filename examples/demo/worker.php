<?php

declare(strict_types=1);

// The demo's task endpoint: runs tasks for the engine's signed self-requests,
// 403 for anything else.

use AsyncEngine\Engine;
use AsyncEngine\RequestRejected;

/** Tells the page's live feed (through the hub) what a task did. */
function feed(string $line): void
{
    Engine::publish('demo/tasks', $line, ['type' => 'task']);
}

try {
    Engine::serve([
        'fast' => function (array $args): void {
            $ms = random_int(5, 40);
            usleep($ms * 1000);
            feed("fast #{$args['n']} done in $ms ms");
        },
        'slow' => function (array $args): void {
            usleep($args['ms'] * 1000);
            feed("slow #{$args['n']} done in {$args['ms']} ms");
        },
        'failing' => function (array $args): void {
            feed("failing: order {$args['order']} declined");
            throw new RuntimeException("payment gateway declined order {$args['order']}");
        },
    ]);
} catch (RequestRejected $e) {
    http_response_code(403);
    echo "Forbidden\n";
}
