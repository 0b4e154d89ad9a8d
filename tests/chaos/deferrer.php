<?php

declare(strict_types=1);

// Defers chaos tasks until `count` are stored, appending "id kind" for each
// to the ids file as soon as defer() returns it. Refusals (StorageError while
// the database is locked, read-only or full; the server down for pages) are
// counted and the same task is tried again.
//   php deferrer.php <ids file> <effects file> <first index> <count> <pause µs> [page URL]

use AsyncEngine\Chaos\Workload;
use AsyncEngine\StorageError;
use AsyncEngine\Tests\Support\Http;

require dirname(__DIR__) . '/php/autoload.php';
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
        // One line per refusal: the run counts lines (an error page's HTML has many).
        fwrite($refused, preg_replace('/\s+/', ' ', get_class($e) . ': ' . $e->getMessage()) . "\n");
        usleep(100000);
    }
}

/** GETs the deferring page; its "id kind" line, or RuntimeException. */
function page(string $url): string
{
    $r = Http::request($url, timeout: 20);
    $body = trim($r['body']);
    if ($r['status'] !== 200 || !preg_match(Workload::RECORD, $body)) {
        $said = trim(strip_tags($body)); // an error page's text, not its markup
        throw new RuntimeException("page answered {$r['status']}: " . ($said !== '' ? $said : $r['error']));
    }
    return $body;
}
