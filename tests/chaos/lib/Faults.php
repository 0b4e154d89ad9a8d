<?php

declare(strict_types=1);

namespace AsyncEngine\Chaos;

use AsyncEngine\Tests\Support\Servers\NginxFpm;

/** A fault the run injects while tasks are deferred; tick() is called every 50 ms. */
abstract class Fault
{
    /** How many times it was injected. */
    public int $injected = 0;
    /** When every() next answers true, in seconds into the phase. */
    private ?float $next = null;

    abstract public function name(): string;

    /** Acts at $t seconds into the phase. */
    abstract public function tick(Lab $lab, float $t): void;

    /** Undoes what is still in effect at the end of the phase. */
    public function stop(Lab $lab): void
    {
    }

    /** True every $min to $max seconds (random), starting after $min. */
    protected function every(float $t, float $min, float $max): bool
    {
        $this->next ??= $min;
        if ($t < $this->next) {
            return false;
        }
        $this->next = $t + self::between($min, $max);
        return true;
    }

    /** A random number of seconds from $min to $max. */
    protected static function between(float $min, float $max): float
    {
        return $min + ($max - $min) * mt_rand() / mt_getrandmax();
    }
}

/** kill -9 of a random php-fpm worker every 200–400 ms (the master starts a new one). */
final class KillWorkers extends Fault
{
    public function name(): string
    {
        return 'kill -9 fpm workers';
    }

    public function tick(Lab $lab, float $t): void
    {
        if ($this->every($t, 0.2, 0.4) && ($pids = $lab->server->workerPids())) {
            posix_kill($pids[array_rand($pids)], SIGKILL);
            $this->injected++;
        }
    }
}

/** kill -9 of a process that is deferring, mid-call, every 0.3–0.8 s; it starts again. */
final class KillDeferrers extends Fault
{
    public function name(): string
    {
        return 'kill -9 deferring processes';
    }

    public function tick(Lab $lab, float $t): void
    {
        if ($this->every($t, 0.3, 0.8) && $lab->killADeferrer()) {
            $this->injected++;
        }
    }
}

/** A full restart of php-fpm (SIGTERM to the master: busy workers die mid-task), or of php -S, at $at s. */
final class RestartServer extends Fault
{
    public function __construct(private float $at = 2.0)
    {
    }

    public function name(): string
    {
        return 'server restart';
    }

    public function tick(Lab $lab, float $t): void
    {
        if ($this->injected === 0 && $t >= $this->at) {
            if ($lab->server instanceof NginxFpm) {
                $lab->server->restartFpm();
            } else {
                $lab->server->stop();
                $lab->server->start();
            }
            $this->injected++;
        }
    }
}

/**
 * A fault that lasts: begun when due(), ended $seconds later (or when the
 * phase ends), begun again when next due.
 */
abstract class Spell extends Fault
{
    private ?float $until = null;
    /** When the next spell may begin: 1 s into the phase, then 1–5 s after the last one ended. */
    private float $resume = 1.0;

    public function __construct(protected float $seconds = 3.0)
    {
    }

    /**
     * Whether to begin the spell at $t (default: 1–5 s after the last one
     * ended, so that work goes on between spells whatever their length).
     */
    protected function due(float $t): bool
    {
        return $t >= $this->resume;
    }

    abstract protected function begin(Lab $lab): void;

    abstract protected function end(Lab $lab): void;

    public function tick(Lab $lab, float $t): void
    {
        if ($this->until === null && $this->due($t)) {
            $this->begin($lab);
            $this->until = $t + $this->seconds;
            $this->injected++;
        } elseif ($this->until !== null && $t >= $this->until) {
            $this->stop($lab);
            $this->resume = $t + self::between(1.0, 5.0);
        }
    }

    public function stop(Lab $lab): void
    {
        if ($this->until !== null) {
            $this->end($lab);
            $this->until = null;
        }
    }
}

/** The web server (nginx and php-fpm, or php -S) down for $seconds, once, while tasks are deferred. */
final class ServerDown extends Spell
{
    public function __construct(private float $at = 1.0, float $seconds = 10.0)
    {
        parent::__construct($seconds);
    }

    public function name(): string
    {
        return "server down {$this->seconds} s";
    }

    protected function due(float $t): bool
    {
        return $this->injected === 0 && $t >= $this->at;
    }

    protected function begin(Lab $lab): void
    {
        $lab->server->stop();
    }

    protected function end(Lab $lab): void
    {
        $lab->server->start();
    }
}

/** Another process holds the database's write lock for $seconds (past the 2 s busy timeout), every few seconds. */
final class LockHolder extends Fault
{
    /** @var resource[] */
    private array $holders = [];

    public function __construct(private float $seconds = 3.5)
    {
    }

    public function name(): string
    {
        return "write lock held {$this->seconds} s";
    }

    public function tick(Lab $lab, float $t): void
    {
        if ($this->every($t, 4.0, 8.0)) {
            $this->holders[] = proc_open($lab->php([dirname(__DIR__) . '/ctl.php', 'hold', (string) $this->seconds]),
                [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'], 2 => ['file', '/dev/null', 'w']], $pipes);
            $this->injected++;
        }
    }

    public function stop(Lab $lab): void
    {
        foreach ($this->holders as $proc) {
            proc_close($proc);
        }
        $this->holders = [];
    }
}

/**
 * The database's directory and files made read-only for 3 s, then writable
 * for 1–5 s, and two fpm workers killed meanwhile so that new processes open
 * the database while it is read-only.
 */
final class ReadOnlyDatabase extends Spell
{
    public function name(): string
    {
        return 'database read-only 3 s';
    }

    protected function begin(Lab $lab): void
    {
        $this->chmod($lab, 0555, 0444);
        foreach (array_slice($lab->server->workerPids(), 0, $lab->server instanceof NginxFpm ? 2 : 0) as $pid) {
            posix_kill($pid, SIGKILL);
        }
    }

    protected function end(Lab $lab): void
    {
        $this->chmod($lab, 0755, 0644);
    }

    private function chmod(Lab $lab, int $dir, int $files): void
    {
        foreach (glob("$lab->dbDir/*") as $file) {
            chmod($file, $files);
        }
        chmod($lab->dbDir, $dir);
    }
}

/** The database's file system (a small tmpfs) filled to the last byte for 3 s, then free for 1–5 s. */
final class DiskFull extends Spell
{
    public function name(): string
    {
        return 'disk full 3 s';
    }

    protected function begin(Lab $lab): void
    {
        $filler = fopen("$lab->dbDir/filler", 'w');
        $block = str_repeat("\0", 65536);
        while (@fwrite($filler, $block) === 65536) {
        }
        while (@fwrite($filler, "\0") === 1) {
        }
        fclose($filler);
    }

    protected function end(Lab $lab): void
    {
        unlink("$lab->dbDir/filler");
    }
}

/**
 * Slow tasks (3 s, lease 30 s) whose lease deadline is moved into the past
 * while they run, as a clock jump would; a kick then reaps and runs them
 * again beside the first run, whose complete() must not count.
 */
final class ClockJump extends Fault
{
    private bool $deferred = false;
    private array $jumped = [];

    public function __construct(private int $tasks = 3)
    {
    }

    public function name(): string
    {
        return 'lease deadline jumps while a slow task runs';
    }

    public function tick(Lab $lab, float $t): void
    {
        if (!$this->deferred) {
            $lab->ctl('slow', (string) $this->tasks, "$lab->dir/ids-slow.txt", "$lab->dir/effects.txt");
            $this->deferred = true;
        }
        foreach (glob("$lab->dir/slow-*-1") as $marker) {
            $id = explode('-', basename($marker))[1];
            if (!isset($this->jumped[$id])) {
                $this->jumped[$id] = true;
                if (trim($lab->ctl('jump', $id)) === '1') {
                    $lab->ctl('kick');
                    $this->injected++;
                }
            }
        }
    }
}

/**
 * PostgreSQL restarted (fast shutdown: every session cut off mid-statement,
 * the server away for the restart) every $min to $max s.
 */
final class RestartPostgres extends Fault
{
    public function __construct(private float $min, private float $max)
    {
    }

    public function name(): string
    {
        return 'PostgreSQL restart';
    }

    public function tick(Lab $lab, float $t): void
    {
        if ($this->every($t, $this->min, $this->max)) {
            Pg::restart();
            $this->injected++;
        }
    }
}

/** Every session on the run's PostgreSQL database terminated (pg_terminate_backend) every 0.5–1.5 s. */
final class TerminateSessions extends Fault
{
    public function name(): string
    {
        return 'PostgreSQL sessions terminated';
    }

    public function tick(Lab $lab, float $t): void
    {
        if ($this->every($t, 0.5, 1.5)) {
            $cut = Pg::pdo()->prepare('SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE datname = ? AND pid <> pg_backend_pid()');
            $cut->execute([$lab->pgDatabase]);
            $this->injected += (int) $cut->fetchColumn();
        }
    }
}
