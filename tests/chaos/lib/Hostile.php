<?php

declare(strict_types=1);

namespace AsyncEngine\Chaos;

/** Hostile-input checks: each returns ['ok' => bool, 'summary' => string]. */
final class Hostile
{
    private const SECRET = 'chaos-secret-0123456789';

    /** @return array<string, \Closure(bool): array> */
    public static function all(bool $long): array
    {
        return [
            'fuzz' => fn (bool $keep) => self::fuzz($long ? 10 : 3, $long ? 20000 : 3000, $keep),
            'forged-requests-fpm' => fn (bool $keep) => self::requests('fpm', $keep),
            'forged-requests-php' => fn (bool $keep) => self::requests('php', $keep),
            'garbage-database' => fn (bool $keep) => self::garbage($keep),
        ];
    }

    /** Every API method with random values, in $runs processes of $calls calls. */
    private static function fuzz(int $runs, int $calls, bool $keep): array
    {
        $lab = new Lab('php');
        $outcomes = [];
        $unchanged = 0;
        try {
            for ($seed = 1; $seed <= $runs; $seed++) {
                $dir = "$lab->dir/fuzz-$seed";
                mkdir($dir);
                chown($dir, posix_getuid() === 0 ? 'nobody' : posix_getuid());
                $proc = proc_open($lab->php(['-d', 'memory_limit=1G', dirname(__DIR__) . '/fuzz.php', (string) $calls, (string) $seed]),
                    [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['file', '/dev/null', 'w']], $pipes, $dir);
                $out = stream_get_contents($pipes[1]);
                fclose($pipes[1]);
                $code = proc_close($proc);
                if ($code !== 0) {
                    return ['ok' => false, 'summary' => "seed $seed: exit $code: " . substr(trim($out), 0, 500)];
                }
                $result = json_decode($out, true);
                foreach ($result['outcomes'] as $what => $n) {
                    $outcomes[$what] = ($outcomes[$what] ?? 0) + $n;
                }
                $unchanged += $result['unchanged'];
            }
        } finally {
            $lab->close($keep);
        }
        $kinds = [];
        foreach ($outcomes as $what => $n) {
            $kind = substr($what, strpos($what, ': ') + 2);
            $kinds[$kind] = ($kinds[$kind] ?? 0) + $n;
        }
        arsort($kinds);
        $described = implode(', ', array_map(fn ($k, $n) => "$n " . str_replace('AsyncEngine\\', '', $k), array_keys($kinds), $kinds));
        return ['ok' => true, 'summary' => sprintf('%d calls of %d API methods with random values (NUL, invalid UTF-8, '
            . 'huge and deep arrays, objects, closures, resources, references, NAN/INF) in %d processes: %s; no crash; '
            . '%d refused calls checked: each left tasks, meta and slots as they were',
            array_sum($outcomes), count(array_unique(array_map(fn ($w) => strtok($w, ':'), array_keys($outcomes)))), $runs, $described,
            $unchanged)];
    }

    /**
     * Requests to a task endpoint with missing, malformed, forged, expired
     * and replayed signatures, wrong slots and oversized headers: each 403,
     * and the queue unchanged; the genuine request then runs its task once.
     * A page asked with a forged Host header sends its task request to the
     * server itself, not to the host named.
     */
    private static function requests(string $kind, bool $keep): array
    {
        $lab = new Lab($kind, null, self::SECRET);
        $problems = [];
        $sent = 0;
        try {
            $lab->server->start();
            // A CLI script defers one task, its request captured on the way.
            $capture = stream_socket_server('tcp://127.0.0.1:0');
            $captureUrl = 'http://' . stream_socket_get_name($capture, false);
            $deferrer = proc_open(array_merge($lab->php(['-d', "async_engine.base_url=$captureUrl", '-r',
                'echo AsyncEngine\Engine::defer("/worker.php", "work", ["effects" => "' . "$lab->dir/effects.txt" . '", "ms" => 0]);']), []),
                [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['file', '/dev/null', 'w']], $pipes);
            $conn = stream_socket_accept($capture, 10);
            $request = '';
            while ($conn && !str_contains($request, "\r\n\r\n") && ($chunk = fread($conn, 8192)) !== false && $chunk !== '') {
                $request .= $chunk;
            }
            $id = trim(stream_get_contents($pipes[1]));
            proc_close($deferrer);
            preg_match_all('/^(X-Async-Engine-[\w-]+): (.*)\r$/mi', $request, $m);
            $found = array_change_key_case(array_combine($m[1], $m[2]));
            $genuine = [];
            foreach (['X-Async-Engine-Slot', 'X-Async-Engine-Time', 'X-Async-Engine-Signature'] as $name) {
                $genuine[$name] = $found[strtolower($name)] ?? '';
            }
            [$slot, $time] = [$genuine['X-Async-Engine-Slot'], (int) $genuine['X-Async-Engine-Time']];
            if (!preg_match('/^POST \/worker.php /', $request) || count($found) !== 3 || !preg_match('/^[0-9A-Z]{26}$/', $id)) {
                return ['ok' => false, 'summary' => "no genuine request captured: $request / $id"];
            }
            $sign = fn (string $slot, string $endpoint, int $time, string $secret = self::SECRET) => [
                'X-Async-Engine-Slot' => $slot, 'X-Async-Engine-Time' => (string) $time,
                'X-Async-Engine-Signature' => hash_hmac('sha256', "$slot\n$endpoint\n$time", $secret)];
            $before = self::state($lab, $id);
            $hostile = [
                'no headers' => [[], 'POST'],
                'GET with genuine headers' => [$genuine, 'GET'],
                'malformed signature' => [['X-Async-Engine-Signature' => 'zz'] + $genuine, 'POST'],
                'forged signature' => [['X-Async-Engine-Signature' => bin2hex(random_bytes(32))] + $genuine, 'POST'],
                'other secret' => [$sign($slot, '/worker.php', $time, 'someone-elses-secret!!'), 'POST'],
                'expired' => [$sign($slot, '/worker.php', time() - 3600), 'POST'],
                'from the future' => [$sign($slot, '/worker.php', time() + 3600), 'POST'],
                'time not a number' => [['X-Async-Engine-Time' => '1e9'] + $genuine, 'POST'],
                'signed for another endpoint' => [$sign($slot, '/other.php', $time), 'POST'],
                'wrong slot' => [$sign(strrev($slot), '/worker.php', $time), 'POST'],
                'malformed slot' => [$sign('../../x', '/worker.php', $time), 'POST'],
                'oversized slot (6 KB)' => [$sign(str_repeat('A', 6000), '/worker.php', $time), 'POST'],
                'oversized signature (6 KB)' => [['X-Async-Engine-Signature' => str_repeat('ab', 3000)] + $genuine, 'POST'],
                'NUL in the slot' => [['X-Async-Engine-Slot' => "$slot%00"] + $genuine, 'POST'],
                '60 junk headers, zero signature' => [['X-Async-Engine-Signature' => str_repeat('0', 64)] + $genuine
                    + array_combine(array_map(fn ($i) => "X-Junk-$i", range(1, 60)), array_fill(0, 60, str_repeat('j', 100))), 'POST'],
            ];
            foreach ($hostile as $what => [$headers, $method]) {
                [$status] = $lab->server->request('/worker.php', $headers, $method);
                $sent++;
                if ($status !== 403) {
                    $problems[] = "$what: HTTP $status";
                }
                if (self::state($lab, $id) !== $before) {
                    $problems[] = "$what changed the queue";
                }
            }
            [$status, $body] = $lab->server->request('/worker.php', $genuine, 'POST');
            if ($status !== 200 || self::taskState($lab, $id) !== 'done') {
                $problems[] = "the genuine request did not run its task: HTTP $status $body";
            }
            $after = self::state($lab, $id);
            [$status] = $lab->server->request('/worker.php', $genuine, 'POST');
            $sent++;
            if ($status !== 403 || self::state($lab, $id) !== $after) {
                $problems[] = "the replayed request: HTTP $status";
            }
            // A page asked under a forged Host naming the capture port.
            [$status, $body] = $lab->server->request('/defer.php?i=0&effects=' . urlencode("$lab->dir/effects.txt"),
                ['Host' => substr($captureUrl, 7)]);
            $forgedId = strtok($body, ' ');
            $deadline = microtime(true) + 10;
            while (microtime(true) < $deadline && self::taskState($lab, $forgedId) !== 'done') {
                usleep(100000);
            }
            $read = [$capture];
            $none = null;
            if ($status !== 200 || stream_select($read, $none, $none, 0) > 0) {
                $problems[] = "forged Host: HTTP $status, or a request reached the host it named";
            }
            if (self::taskState($lab, $forgedId) !== 'done') {
                $problems[] = 'the task deferred under a forged Host did not run on this server';
            }
        } catch (\Throwable $e) {
            $problems[] = get_class($e) . ': ' . $e->getMessage();
        } finally {
            $lab->close($keep);
        }
        return ['ok' => !$problems, 'summary' => $problems ? implode('; ', $problems)
            : sprintf('%s: %d hostile requests (missing, malformed, forged, expired, future, replayed signatures; wrong, '
                . 'malformed, oversized slots; junk headers) each 403 with the queue unchanged; the genuine request ran '
                . 'its task once; a forged Host sent nothing to the host it named', $lab->serverName(), $sent)];
    }

    /** A task's state ('' for none), as another process sees it. */
    private static function taskState(Lab $lab, string $id): string
    {
        return Lab::run($lab->php(['-r', "echo AsyncEngine\\Engine::status('$id')['state'] ?? '';"]));
    }

    /** The task's state and the slots table, to show a request changed nothing. */
    private static function state(Lab $lab, string $id): string
    {
        return Lab::run($lab->php(['-r', "echo json_encode([AsyncEngine\\Engine::status('$id'), AsyncEngine\\Engine::stats()['in_flight']]);"]));
    }

    /**
     * The database replaced, while the server is stopped, by garbage and by
     * a database of a future schema: the page's defer() gets a clear
     * StorageError and neither file is touched; the real one put back works.
     */
    private static function garbage(bool $keep): array
    {
        $lab = new Lab('fpm');
        $problems = [];
        try {
            $lab->server->start();
            $url = '/defer.php?i=0&effects=' . urlencode("$lab->dir/effects.txt");
            [$status] = $lab->server->request($url);
            $lab->server->stop();
            rename($lab->database, "$lab->database.real");
            foreach (['wal', 'shm'] as $suffix) {
                @rename("$lab->database-$suffix", "$lab->database.real-$suffix");
            }
            $future = "$lab->dir/future.sqlite";
            Lab::run(['cp', "$lab->database.real", $future]);
            $db = new \SQLite3($future);
            $db->exec('PRAGMA user_version = 99');
            $db->close();
            foreach (['garbage' => [random_bytes(8192), 'is not a SQLite database'],
                'future schema' => [file_get_contents($future), 'newer than this extension supports']] as $what => [$bytes, $message]) {
                file_put_contents($lab->database, $bytes);
                chown($lab->database, posix_getuid() === 0 ? 'nobody' : posix_getuid());
                $lab->server->start();
                [$status, $body] = $lab->server->request($url);
                $lab->server->stop();
                if ($status !== 503 || !str_contains($body, 'StorageError') || !str_contains($body, $message)) {
                    $problems[] = "$what: HTTP $status $body";
                }
                if (file_get_contents($lab->database) !== $bytes) {
                    $problems[] = "$what: the file was changed";
                }
                @unlink("$lab->database-wal");
                @unlink("$lab->database-shm");
            }
            rename("$lab->database.real", $lab->database);
            foreach (['wal', 'shm'] as $suffix) {
                @rename("$lab->database.real-$suffix", "$lab->database-$suffix");
            }
            $lab->server->start();
            [$status, $body] = $lab->server->request($url);
            if ($status !== 200) {
                $problems[] = "the real database put back: HTTP $status $body";
            }
        } catch (\Throwable $e) {
            $problems[] = get_class($e) . ': ' . $e->getMessage();
        } finally {
            $lab->close($keep);
        }
        return ['ok' => !$problems, 'summary' => $problems ? implode('; ', $problems)
            : 'database replaced (server stopped) by 8 KB of garbage, then by a database of schema version 99: the page '
            . 'got a StorageError saying so (HTTP 503) and neither file was changed; the real one put back served again'];
    }
}
