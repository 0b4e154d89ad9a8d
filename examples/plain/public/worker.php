<?php

declare(strict_types=1);

// The worker endpoint: runs due tasks for the engine's signed self-requests,
// 403 for anything else.

use AsyncEngine\Engine;
use AsyncEngine\RequestRejected;
use AsyncEngine\Task;
use Example\Mailer;

require dirname(__DIR__) . '/src/bootstrap.php';

try {
    $ran = Engine::serve([
        'welcome-mail' => function (array $args, Task $task): void {
            Mailer::send($args['to'], 'Welcome!');
        },
    ]);
    echo "ran $ran\n";
} catch (RequestRejected $e) {
    http_response_code(403);
    echo "Forbidden\n";
}
