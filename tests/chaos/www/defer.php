<?php

declare(strict_types=1);

// A page that defers one chaos task: ?i=<n>&effects=<file>; answers "id kind".
use AsyncEngine\Chaos\Workload;
use AsyncEngine\EngineException;

require dirname(__DIR__) . '/lib/Workload.php';

$kind = Workload::kind((int) ($_GET['i'] ?? 0));
try {
    echo Workload::defer($kind, (string) $_GET['effects']), " $kind\n";
} catch (EngineException $e) {
    http_response_code(503);
    echo get_class($e), ': ', $e->getMessage(), "\n";
}
