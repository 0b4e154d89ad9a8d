<?php

/**
 * One of the concurrency run's deferring processes:
 *   php deferrer.php DB BASE_URL ENDPOINT N
 * defers N no-op tasks as fast as it can; prints {seconds, naps, errors}.
 */

declare(strict_types=1);

use AsyncEngine\Engine;
use AsyncEngine\StorageError;

[, $db, $baseUrl, $endpoint, $n] = $argv;
Engine::configure(['database' => $db, 'base_url' => $baseUrl, 'secret' => 'bench-secret-0123456789']);
Engine::stats(); // open the database before the clock starts
$errors = 0;
$started = microtime(true);
for ($i = 0; $i < (int) $n; $i++) {
    try {
        Engine::defer($endpoint, 'noop');
    } catch (StorageError $e) {
        $errors++;
    }
}
echo json_encode(['seconds' => microtime(true) - $started, 'naps' => Engine::stats()['busy_naps'],
    'errors' => $errors]);
