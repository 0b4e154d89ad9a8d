<?php

declare(strict_types=1);

// Calls every method of the extension's API with random PHP values: strings
// with NUL bytes and invalid UTF-8, huge and deeply nested arrays, objects,
// closures, resources, references, NAN and INF. Only the documented
// exceptions may come out (the engine's own, and PHP's TypeError,
// ValueError and ArgumentCountError for parameters of the wrong type); a
// crash ends the process with a signal, which the harness reports. A call
// that throws must change nothing: every task and meta row is compared
// before and after it, and the slots in flight may not grow. The sender
// thread may free slots meanwhile, and add one only for an endpoint that
// was due: its timer retries a failed delivery when the backoff ends.
//   php fuzz.php <iterations> <seed>     (in an empty directory of its own)

use AsyncEngine\Engine;
use AsyncEngine\EngineException;
use AsyncEngine\Task;

[, $iterations, $seed] = $argv;
mt_srand((int) $seed);
$secret = 'fuzz-secret-0123456789';
$hole = stream_socket_server('tcp://127.0.0.1:0'); // self-requests go here and wait
$settings = ['database' => getcwd() . '/fuzz.sqlite', 'secret' => $secret,
    'base_url' => 'http://' . stream_socket_get_name($hole, false), 'max_workers' => 1000];
Engine::configure($settings);

/** A random PHP value; $depth bounds nesting. */
function value(int $depth = 0): mixed
{
    static $resource;
    $resource ??= fopen('php://memory', 'r');
    $strings = ['', "\0", "a\0b", "\xff\xfe", "\xc3\x28", '/w.php', '/_async/run', 'http://evil.example/w.php',
        '//evil.example/', '../../etc/passwd', 'w.php', str_repeat('x', 300), str_repeat("\u{1F600}", 100),
        'queued', 'done', 'dead', 'delay', 'at', 'priority', 'timeout', 'unique', 'max_attempts', 'database',
        'max_workers', '-1', '1e400', 'NAN', '0x10', ' 5 '];
    switch (mt_rand(0, $depth > 3 ? 9 : 13)) {
        case 0: return null;
        case 1: return (bool) mt_rand(0, 1);
        case 2: return [0, -1, 1, PHP_INT_MAX, PHP_INT_MIN, mt_rand(), 255, 256, 1001][mt_rand(0, 8)];
        case 3: return [NAN, INF, -INF, -0.0, 0.5, 1e308, -1e-308, 1e20, 86400.5][mt_rand(0, 8)];
        case 4: case 5: return $strings[array_rand($strings)];
        case 6: return random_bytes(mt_rand(0, 64));
        case 7: return [new stdClass(), new ArrayObject([1]), fn () => 1, $resource, new DateTime()][mt_rand(0, 4)];
        case 8: return mt_rand(0, 20) === 0 ? str_repeat('y', mt_rand(1 << 20, 3 << 20)) : 'task';
        case 9: return mt_rand(0, 1) ? '/w.php' : 'job';
        case 10: // an array of random values
            $a = [];
            for ($i = mt_rand(0, 6); $i > 0; $i--) {
                $a[fuzz_key()] = value($depth + 1);
            }
            return $a;
        case 11: // deep nesting
            $a = [];
            for ($i = mt_rand(100, 300); $i > 0; $i--) {
                $a = [$a];
            }
            return $a;
        case 12: // huge
            return mt_rand(0, 4) === 0 ? range(1, 200000) : array_fill(0, 1000, 'z');
        default: // references
            $x = value($depth + 1);
            $a = ['r' => &$x, 's' => &$x];
            return $a;
    }
}

/** A random array key: a setting's name, junk, or an int. */
function fuzz_key(): int|string
{
    $v = value(4);
    return is_int($v) ? $v : (is_scalar($v) ? (string) $v : 'k');
}

/** A real claimed task, through a signed request made to look like it arrived. */
function claim(string $secret): ?Task
{
    $id = Engine::defer('/w.php', 'job', ['n' => 1]);
    $db = new SQLite3(getcwd() . '/fuzz.sqlite');
    $slot = $db->querySingle("SELECT id FROM slots WHERE state = 'sent' ORDER BY created_at DESC LIMIT 1");
    $db->close();
    if (!is_string($slot)) {
        return null;
    }
    $time = time();
    $_SERVER['REQUEST_METHOD'] = 'POST';
    $_SERVER['REQUEST_URI'] = '/w.php';
    $_SERVER['HTTP_X_ASYNC_ENGINE_SLOT'] = $slot;
    $_SERVER['HTTP_X_ASYNC_ENGINE_TIME'] = (string) $time;
    $_SERVER['HTTP_X_ASYNC_ENGINE_SIGNATURE'] = hash_hmac('sha256', "$slot\n/w.php\n$time", $secret);
    return Engine::accept();
}

$calls = [
    'defer' => fn () => Engine::defer(value(), value(), value(), value()),
    'defer-valid-endpoint' => fn () => Engine::defer('/w.php', 'job', value(), value()),
    'accept' => fn () => Engine::accept(),
    'serve' => fn () => Engine::serve(value(), value()),
    'kick' => fn () => Engine::kick(),
    'status' => fn () => Engine::status(value()),
    'cancel' => fn () => Engine::cancel(value()),
    'retry' => fn () => Engine::retry(value()),
    'tasks' => fn () => Engine::tasks(value(), value()),
    'purge' => fn () => Engine::purge(value(), value()),
    'history' => fn () => Engine::history(value(), value()),
    'stats' => fn () => Engine::stats(),
    'configure' => function () use ($settings) {
        try {
            Engine::configure([fuzz_key() => value()] + (mt_rand(0, 1) ? ['timeout' => value()] : []));
        } finally {
            Engine::configure(array_fill_keys(['timeout', 'max_attempts', 'retention', 'busy_timeout', 'max_args_size'], null) + $settings);
        }
    },
    'new Engine' => fn () => new Engine(),
    'new Task' => fn () => new Task(),
    'task methods' => function () use ($secret) {
        $task = claim($secret);
        if ($task === null) {
            return;
        }
        foreach ([fn () => $task->extend(value()), fn () => $task->fail(value(), value()), fn () => $task->complete()] as $call) {
            try {
                $call();
            } catch (EngineException | TypeError | ValueError | ArgumentCountError) {
            }
        }
        $task->id = 'forged'; // read-only: Error
    },
];

/**
 * What a refused call must leave as it was: [tasks and meta rows, slots in
 * flight, the earliest time an endpoint is due (null: none)].
 */
function state(): array
{
    $file = getcwd() . '/fuzz.sqlite';
    if (!is_file($file)) {
        return [md5(serialize([])), 0, null]; // as an empty database (one is created on first use)
    }
    $db = new SQLite3($file, SQLITE3_OPEN_READONLY);
    $db->busyTimeout(5000);
    $rows = [];
    foreach (['tasks' => 'id', 'meta' => 'key'] as $table => $key) {
        $result = $db->query("SELECT * FROM $table ORDER BY $key");
        while ($result !== false && ($row = $result->fetchArray(SQLITE3_ASSOC)) !== false) {
            $rows[] = $row;
        }
    }
    $slots = (int) $db->querySingle('SELECT count(*) FROM slots');
    $due = $db->querySingle('SELECT min(next_due) FROM endpoints');
    $db->close();
    return [md5(serialize($rows)), $slots, $due];
}

$counts = [];
$checked = 0;
for ($i = 0; $i < (int) $iterations; $i++) {
    $name = array_rand($calls);
    // 'task methods' defers and claims on purpose before its calls; the rest is one call.
    $before = $name === 'task methods' ? null : state();
    try {
        $calls[$name]();
        $outcome = 'returned';
    } catch (EngineException | TypeError | ValueError | ArgumentCountError $e) {
        $outcome = get_class($e);
        if ($before !== null && !$e instanceof AsyncEngine\StorageError) {
            $after = state();
            $senderMayAdd = $before[2] !== null && $before[2] <= microtime(true) * 1000;
            if ($after[0] !== $before[0] || ($after[1] > $before[1] && !$senderMayAdd)) {
                echo "CHANGED STATE in $name: ", get_class($e), ': ', $e->getMessage(), "\n";
                exit(1);
            }
            $checked++;
        }
    } catch (Error | Exception $e) {
        // Only the documented ones: Task's read-only properties (the binding
        // throws "No setter available"), constructors that may not be called.
        if (!preg_match('/No setter available|You cannot instantiate this class from PHP/', $e->getMessage())) {
            echo "UNEXPECTED in $name: ", get_class($e), ': ', $e->getMessage(), "\n";
            exit(1);
        }
        $outcome = 'Error (documented)';
    } catch (Throwable $e) {
        echo "UNEXPECTED in $name: ", get_class($e), ': ', $e->getMessage(), "\n";
        exit(1);
    }
    $counts["$name: $outcome"] = ($counts["$name: $outcome"] ?? 0) + 1;
    unset($_SERVER['HTTP_X_ASYNC_ENGINE_SLOT'], $_SERVER['HTTP_X_ASYNC_ENGINE_TIME'], $_SERVER['HTTP_X_ASYNC_ENGINE_SIGNATURE']);
}
ksort($counts);
echo json_encode(['outcomes' => $counts, 'unchanged' => $checked]), "\n";
