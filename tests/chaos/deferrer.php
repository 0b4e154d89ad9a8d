<?php

declare(strict_types=1);

// Defers chaos tasks until `count` are stored, appending "id kind" for each
// to the ids file as soon as defer() returns it. Refusals (StorageError while
// the database is locked, read-only or full; the server down for pages) are
// counted and the same task is tried again.
//   php deferrer.php <ids file> <effects file> <first index> <count> <pause µs> [page URL]

use AsyncEngine\Chaos\Workload;
use AsyncEngine\StorageError;

require __DIR__ . '/lib/Workload.php';

[, $idsFile, $effects, $first, $count, $pause] = $argv;
$page = $argv[6] ?? null;
$ids = fopen($idsFile, 'a');
$refused = fopen("$idsFile.refused", 'a');
for ($i = (int) $first, $end = $i + (int) $count; $i < $end;) {
    try {
        if ($page === null) {
            $kind = Workload::kind($i);
            $line = Workload::defer($kind, $effects) . " $kind";
        } else {
            $line = page("$page?" . http_build_query(['i' => $i, 'effects' => $effects]));
        }
        fwrite($ids, "$line\n");
        $i++;
        usleep((int) $pause);
    } catch (StorageError | RuntimeException $e) {
        fwrite($refused, get_class($e) . ': ' . $e->getMessage() . "\n");
        usleep(100000);
    }
}

/** GETs the deferring page; its "id kind" line, or RuntimeException. */
function page(string $url): string
{
    $ch = curl_init($url);
    curl_setopt_array($ch, [CURLOPT_RETURNTRANSFER => true, CURLOPT_TIMEOUT => 20]);
    $body = trim((string) curl_exec($ch));
    $status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    $error = curl_error($ch);
    curl_close($ch);
    if ($status !== 200 || !preg_match(Workload::RECORD, $body)) {
        throw new RuntimeException("page answered $status: " . ($body !== '' ? $body : $error));
    }
    return $body;
}
