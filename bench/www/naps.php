<?php

// The concurrency run's reading of a worker's busy naps, before and after
// the timed part (Engine::stats() counts every task, too slow for each task
// request): appends "PID NAPS" to the file ?file= names.

use AsyncEngine\Engine;

file_put_contents((string) $_GET['file'], getmypid() . ' ' . Engine::stats()['busy_naps'] . "\n", FILE_APPEND | LOCK_EX);
