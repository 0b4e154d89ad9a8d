<?php

/**
 * One of the concurrency run's deferring processes:
 *   php deferrer.php DB BASE_URL ENDPOINT N
 * Opens the database and prints "ready"; on a line from stdin defers N
 * no-op tasks as fast as it can and prints {seconds, errors}; on another
 * line prints {naps} (read by stats(), which counts every task, so the
 * parent asks for it once the timed run is over).
 */

declare(strict_types=1);

use AsyncEngine\Engine;
use AsyncEngine\StorageError;

[, $db, $baseUrl, $endpoint, $n] = $argv;
Engine::configure(['database' => $db, 'base_url' => $baseUrl, 'secret' => 'bench-secret-0123456789']);
$naps = Engine::stats()['busy_naps']; // opens the database before the clock starts
echo "ready\n";
fgets(STDIN);
$errors = 0;
$started = microtime(true);
for ($i = 0; $i < (int) $n; $i++) {
    try {
        Engine::defer($endpoint, 'noop');
    } catch (StorageError $e) {
        $errors++;
    }
}
echo json_encode(['seconds' => microtime(true) - $started, 'errors' => $errors]), "\n";
fgets(STDIN);
echo json_encode(['naps' => Engine::stats()['busy_naps'] - $naps]), "\n";
