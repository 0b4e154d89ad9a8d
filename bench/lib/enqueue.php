<?php

/**
 * The enqueue methods the benchmark compares, the same code from the CLI and
 * inside a php-fpm request. Each enqueues the same job: send the welcome mail
 * to user 42.
 */

declare(strict_types=1);

namespace AsyncEngine\Bench;

use AsyncEngine\Engine;
use PDO;

/** The methods: name => what the report calls it. */
const METHODS = [
    'defer' => 'Engine::defer()',
    'pdo' => 'PDO SQLite INSERT of the same row',
    'pdo1' => 'PDO SQLite INSERT into a queue table with one claim index',
    'dbqueue' => 'database queue (Laravel-style jobs table)',
    'spawn' => 'WP-Cron-style loopback spawn (blocking curl POST, 10 ms timeout)',
    'spawn-boot' => 'the same spawn to a target that boots for 30 ms, as wp-cron.php loading WordPress',
];

/** The job's arguments. */
const ARGS = ['user' => 42, 'template' => 'welcome', 'locale' => 'en_NZ'];

/** A queued job as a framework serialises it into its payload. */
final class SendWelcomeMail
{
    public function __construct(public int $user, public string $template, public string $locale)
    {
    }
}

/** Calls $call($i) $calls times; the nanoseconds each took. */
function sample(int $calls, callable $call): array
{
    $times = [];
    for ($i = 0; $i < $calls; $i++) {
        $t = hrtime(true);
        $call($i);
        $times[] = hrtime(true) - $t;
    }
    return $times;
}

/**
 * One enqueue call of `$method`, its setup done: databases in `$dir`, task
 * requests sent to `$blackHole` (a port that never answers, so no task runs
 * during the measurement), loopback spawns to `$spawnUrl`.
 */
function enqueuer(string $method, string $dir, string $blackHole, string $spawnUrl): callable
{
    switch ($method) {
        case 'defer':
            Engine::configure(['database' => "$dir/engine.sqlite", 'base_url' => $blackHole,
                'secret' => 'bench-secret-0123456789']);
            return fn (int $i) => Engine::defer('/tasks.php', 'send-mail', ARGS);
        case 'pdo':
            $pdo = open("$dir/pdo.sqlite");
            // The engine's own tasks table and indexes, so both write the same row.
            if (!$pdo->query("SELECT 1 FROM sqlite_master WHERE name = 'tasks'")->fetch()) {
                $engine = open("$dir/engine.sqlite");
                foreach ($engine->query("SELECT sql FROM sqlite_master WHERE tbl_name = 'tasks' AND sql IS NOT NULL") as $row) {
                    $pdo->exec($row['sql']);
                }
            }
            $insert = $pdo->prepare("INSERT INTO tasks (id, endpoint, name, args, state, priority, due_at,
                max_attempts, timeout, created_at, updated_at)
                VALUES (?, '/tasks.php', 'send-mail', ?, 'queued', 0, ?, 5, 300000, ?, ?)");
            return function (int $i) use ($insert): void {
                $now = (int) (microtime(true) * 1000);
                $insert->execute([bin2hex(random_bytes(13)), json_encode(ARGS), $now, $now, $now]);
            };
        case 'pdo1':
            // The least a queue can be: a table and the one index its claims need.
            $pdo = open("$dir/pdo1.sqlite");
            $pdo->exec('CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY, endpoint TEXT NOT NULL,
                name TEXT NOT NULL, args TEXT NOT NULL, state TEXT NOT NULL, priority INTEGER NOT NULL,
                due_at INTEGER NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);
                CREATE INDEX IF NOT EXISTS queue_claim ON queue (endpoint, priority DESC, due_at)
                WHERE state = \'queued\'');
            $insert = $pdo->prepare("INSERT INTO queue (endpoint, name, args, state, priority, due_at, created_at)
                VALUES ('/tasks.php', 'send-mail', ?, 'queued', 0, ?, ?)");
            return function (int $i) use ($insert): void {
                $now = (int) (microtime(true) * 1000);
                $insert->execute([json_encode(ARGS), $now, $now]);
            };
        case 'dbqueue':
            $pdo = open("$dir/jobs.sqlite");
            $pdo->exec('CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY AUTOINCREMENT,
                queue TEXT NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL,
                reserved_at INTEGER, available_at INTEGER NOT NULL, created_at INTEGER NOT NULL);
                CREATE INDEX IF NOT EXISTS jobs_queue_index ON jobs (queue)');
            // As Laravel's DatabaseQueue::pushToDatabase(): payload JSON around the
            // serialised job, an INSERT through the query builder (prepared per call).
            return function (int $i) use ($pdo): void {
                $job = new SendWelcomeMail(...array_values(ARGS));
                $payload = json_encode([
                    'uuid' => uuid(),
                    'displayName' => SendWelcomeMail::class,
                    'job' => 'Illuminate\Queue\CallQueuedHandler@call',
                    'maxTries' => null,
                    'maxExceptions' => null,
                    'failOnTimeout' => false,
                    'backoff' => null,
                    'timeout' => null,
                    'retryUntil' => null,
                    'data' => ['commandName' => SendWelcomeMail::class, 'command' => serialize($job)],
                ], JSON_UNESCAPED_UNICODE);
                $now = time();
                $pdo->prepare('INSERT INTO jobs (queue, payload, attempts, reserved_at, available_at, created_at)
                    VALUES (?, ?, ?, ?, ?, ?)')->execute(['default', $payload, 0, null, $now, $now]);
            };
        case 'spawn':
        case 'spawn-boot':
            // As spawn_cron(): wp_remote_post() to wp-cron.php with a 0.01 s
            // timeout on every page load that finds an event due.
            $boot = $method === 'spawn-boot' ? '&boot_ms=30' : '';
            return function (int $i) use ($spawnUrl, $boot): void {
                $ch = curl_init(sprintf('%s?doing_wp_cron=%.22F%s', $spawnUrl, microtime(true), $boot));
                curl_setopt_array($ch, [CURLOPT_POST => true, CURLOPT_POSTFIELDS => '', CURLOPT_RETURNTRANSFER => true,
                    CURLOPT_TIMEOUT_MS => 10, CURLOPT_NOSIGNAL => true]);
                curl_exec($ch);
                curl_close($ch);
            };
    }
    throw new \InvalidArgumentException("unknown method $method");
}

/** A SQLite connection with the engine's pragmas (WAL, synchronous NORMAL, 5 s busy timeout). */
function open(string $file): PDO
{
    $pdo = new PDO("sqlite:$file");
    $pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
    $pdo->setAttribute(PDO::ATTR_DEFAULT_FETCH_MODE, PDO::FETCH_ASSOC);
    $pdo->exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000');
    return $pdo;
}

function uuid(): string
{
    $b = random_bytes(16);
    $b[6] = chr(ord($b[6]) & 0x0f | 0x40);
    $b[8] = chr(ord($b[8]) & 0x3f | 0x80);
    return vsprintf('%s%s-%s-%s-%s-%s%s%s', str_split(bin2hex($b), 4));
}
