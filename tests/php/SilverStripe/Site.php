<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\SilverStripe;

use PDO;

/**
 * A real SilverStripe 5 project, installed offline from ../shared/silverstripe
 * with this package as a path repository, the test app of
 * tests/php/fixtures/silverstripe added, and dev/build run.
 */
final class Site
{
    private function __construct(public readonly string $dir)
    {
    }

    /**
     * @param string $modules SS_MODULES: "crontask queuedjobs", or "" for framework + sqlite3 only
     * @param string $baseUrl SS_BASE_URL written into .env
     */
    public static function create(string $modules, string $baseUrl): self
    {
        $repo = dirname(__DIR__, 3);
        $installer = dirname($repo) . '/shared/silverstripe/new-project.sh';
        $dir = sys_get_temp_dir() . '/async-engine-ss-' . bin2hex(random_bytes(4));
        $site = new self($dir);
        // proc_open drops empty variables: " " is "no optional modules" too.
        [$code, $out] = self::exec([$installer, $dir, $repo], ['SS_MODULES' => $modules ?: ' ', 'SS_BASE_URL' => $baseUrl]);
        if ($code !== 0) {
            throw new \RuntimeException("new-project.sh failed ($code):\n$out");
        }
        $fixtures = dirname(__DIR__) . '/fixtures/silverstripe';
        self::copy("$fixtures/app", "$dir/app");
        if (str_contains($modules, 'queuedjobs')) {
            self::copy("$fixtures/queuedjobs", "$dir/app");
        }
        if (is_dir("$dir/vendor/silverstripe/admin") && is_dir("$dir/vendor/silverstripe/versioned")) {
            // The live-events test's versioned record and its CMS section
            // (silverstripe/admin brings silverstripe/versioned).
            self::copy("$fixtures/admin", "$dir/app");
        }
        $site->devBuild();
        return $site;
    }

    /** Runs dev/build (flushing the manifest); throws with its output when it fails. */
    public function devBuild(): string
    {
        [$code, $out] = $this->sake('dev/build', 'flush=1');
        if ($code !== 0 || !str_contains($out, 'Database build completed') || preg_match('/Fatal error|Uncaught /', $out)) {
            throw new \RuntimeException("dev/build failed ($code):\n$out");
        }
        return $out;
    }

    /** Runs `vendor/bin/sake ...` in the project; returns [exit code, output]. */
    public function sake(string ...$args): array
    {
        return self::exec(array_merge([$this->dir . '/vendor/bin/sake'], $args), [], $this->dir);
    }

    /** Runs PHP code in the booted project (CLI); returns [exit code, output]. */
    public function php(string $code): array
    {
        $script = $this->dir . '/probe-' . bin2hex(random_bytes(4)) . '.php';
        file_put_contents($script, "<?php\nrequire __DIR__ . '/vendor/autoload.php';\n"
            . "(new SilverStripe\\Core\\CoreKernel(BASE_PATH))->boot();\n$code");
        try {
            return self::exec([PHP_BINARY, $script], [], $this->dir);
        } finally {
            unlink($script);
        }
    }

    /** Sets (or adds) a variable in the project's .env. */
    public function setEnv(string $name, string $value): void
    {
        $env = (string) file_get_contents("$this->dir/.env");
        $line = $name . '="' . addcslashes($value, '"\\') . '"';
        $env = preg_match("/^$name=.*$/m", $env)
            ? preg_replace("/^$name=.*$/m", $line, $env)
            : rtrim($env) . "\n$line\n";
        file_put_contents("$this->dir/.env", $env);
    }

    /** The engine's database the module uses by default. */
    public function engineDatabase(): string
    {
        return $this->dir . '/.async-engine/engine.sqlite';
    }

    /** A new connection to the site's own database (errors throw; waits up to 10 s for a lock). */
    public function connect(): PDO
    {
        $pdo = new PDO('sqlite:' . $this->dir . '/db/site.sqlite', null, null, [PDO::ATTR_TIMEOUT => 10]);
        $pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
        return $pdo;
    }

    /** Rows of a query on the site's own database. */
    public function query(string $sql): array
    {
        return $this->connect()->query($sql)->fetchAll(PDO::FETCH_ASSOC);
    }

    /** WrittenBy of the AsyncTestRecord titled `$title`, or null while there is none. */
    public function record(string $title): ?string
    {
        $stmt = $this->connect()->prepare('SELECT WrittenBy FROM AsyncTestRecord WHERE Title = ?');
        $stmt->execute([$title]);
        $found = $stmt->fetchColumn();
        return $found === false ? null : (string) $found;
    }

    /** Waits (bounded) for the record titled `$title`; returns its WrittenBy or null. */
    public function waitForRecord(string $title, float $seconds = 15): ?string
    {
        $deadline = microtime(true) + $seconds;
        do {
            if (($by = $this->record($title)) !== null) {
                return $by;
            }
            usleep(50000);
        } while (microtime(true) < $deadline);
        return null;
    }

    public function remove(): void
    {
        if (is_dir($this->dir)) {
            exec('rm -rf ' . escapeshellarg($this->dir));
        }
    }

    private static function copy(string $from, string $to): void
    {
        exec('cp -r ' . escapeshellarg($from) . '/. ' . escapeshellarg($to), $out, $code);
        if ($code !== 0) {
            throw new \RuntimeException("could not copy $from to $to");
        }
    }

    /** Runs a command (stderr folded into the output); returns [exit code, output]. */
    private static function exec(array $command, array $env = [], ?string $cwd = null): array
    {
        $proc = proc_open($command, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['redirect', 1]], $pipes, $cwd, $env + getenv());
        $out = stream_get_contents($pipes[1]);
        fclose($pipes[1]);
        return [proc_close($proc), (string) $out];
    }
}
