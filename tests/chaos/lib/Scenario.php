<?php

declare(strict_types=1);

namespace AsyncEngine\Chaos;

/**
 * One fault scenario: a server, faults injected while tasks are deferred
 * over a phase, then recovery as cron would drive it (a kick every 2 s
 * throughout, as `* * * * *` compressed) and an account of every task.
 */
final class Scenario
{
    /** @param \Closure(): Fault[] $faults */
    public function __construct(
        private string $server,
        private \Closure $faults,
        private int $tasks,
        private float $seconds,
        private ?string $tmpfs = null,
        private bool $postgres = false,
    ) {
    }

    /**
     * The scenarios, by name; --long runs more tasks for longer. Those on
     * PostgreSQL run when the run has a cluster (Pg::admin()).
     */
    public static function all(bool $long): array
    {
        $n = $long ? 3000 : 500;
        $s = $long ? 40.0 : 6.0;
        $fpm = fn (\Closure $faults, ?string $tmpfs = null) => new self('fpm', $faults, $n, $s, $tmpfs);
        $pg = fn (\Closure $faults) => new self('fpm', $faults, $n, $s, null, true);
        $postgres = Pg::admin() === null ? [] : [
            'pg-kill' => $pg(fn () => [new KillWorkers(), new KillDeferrers(), new ClockJump($long ? 10 : 3)]),
            'pg-sessions-cut' => $pg(fn () => [new TerminateSessions(), new KillWorkers()]),
            'pg-restart' => $pg(fn () => [new RestartPostgres($s / 4, $s / 2), new RestartServer($s / 2)]),
        ];
        return [
            'kill-workers' => $fpm(fn () => [new KillWorkers()]),
            'kill-deferrers' => $fpm(fn () => [new KillDeferrers()]),
            'fpm-restart' => $fpm(fn () => [new RestartServer($s / 3)]),
            'server-down' => $fpm(fn () => [new ServerDown(1.0, 10.0)]),
            'lock-held' => $fpm(fn () => [new LockHolder()]),
            'read-only' => $fpm(fn () => [new ReadOnlyDatabase()]),
            'disk-full' => $fpm(fn () => [new DiskFull()], '64m'),
            'clock-jump' => $fpm(fn () => [new ClockJump($long ? 10 : 3)]),
            'all-at-once' => $fpm(fn () => [new KillWorkers(), new KillDeferrers(), new RestartServer($s / 2),
                new LockHolder(), new ClockJump($long ? 10 : 3)]),
            'php-server' => new self('php', fn () => [new KillDeferrers(), new RestartServer($s / 2), new LockHolder(),
                new ClockJump($long ? 10 : 3)], $n, $s),
            'php-server-down' => new self('php', fn () => [new ServerDown(1.0, 10.0)], intdiv($n, 2), $s),
        ] + $postgres;
    }

    /** Runs the scenario; its report row. */
    public function run(string $name, bool $keep): array
    {
        $started = microtime(true);
        $faults = ($this->faults)();
        $lab = new Lab($this->server, $this->tmpfs, null, $this->postgres);
        $row = ['name' => $name, 'server' => $lab->serverName(),
            'faults' => [], 'ok' => false, 'errors' => []];
        try {
            $lab->server->start();
            $lab->startDeferrers(3, 1, $this->tasks, $this->seconds);
            $phase = microtime(true);
            $kicked = 0.0;
            // Faults act while tasks are deferred (at least the planned time, at most 4 times it).
            while ((($t = microtime(true) - $phase) < $this->seconds || $lab->deferring()) && $t < 4 * $this->seconds + 20) {
                foreach ($faults as $fault) {
                    $fault->tick($lab, $t);
                }
                $kicked = self::kick($lab, $kicked);
                usleep(50000);
            }
            foreach ($faults as $fault) {
                $fault->stop($lab);
            }
            if ($lab->deferring()) {
                $row['errors'][] = 'deferrers did not finish within the phase';
            }
            $lab->stopDeferrers();
            // Recovery: kicks until nothing is queued or running (bounded).
            $deadline = microtime(true) + 150;
            do {
                $kicked = self::kick($lab, $kicked);
                usleep(200000);
                $stats = json_decode($lab->ctl('stats'), true);
            } while ($stats['queued'] + $stats['running'] > 0 && microtime(true) < $deadline);
            $account = json_decode($lab->ctl('account', $lab->dir), true);
            [$recorded, $refused] = $lab->deferred();
            $row += $account + ['planned' => $this->tasks, 'refused' => $refused, 'refusals' => $lab->refusals()];
            if ($recorded < $this->tasks) {
                $row['errors'][] = "only $recorded of {$this->tasks} tasks were deferred";
            }
            foreach (['lost', 'stuck', 'unfinished', 'miscounted'] as $bad) {
                if ($account[$bad]) {
                    $row['errors'][] = count($account[$bad]) . " $bad: " . implode('; ', array_slice($account[$bad], 0, 5));
                }
            }
            $row['ok'] = !$row['errors'];
        } catch (\Throwable $e) {
            $row['errors'][] = get_class($e) . ': ' . $e->getMessage();
        } finally {
            foreach ($faults as $fault) {
                $fault->stop($lab);
                $row['faults'][] = $fault->name() . ' ×' . $fault->injected;
            }
            if (!$row['ok']) {
                $row['errors'][] = 'server log: ' . substr($lab->server->log(), -3000);
            }
            $lab->close($keep || !$row['ok']);
            if (!$row['ok']) {
                $row['errors'][] = "kept $lab->dir";
            }
        }
        $row['seconds'] = microtime(true) - $started;
        printf("%-24s %s  %s  %d tasks, %d runs, %d duplicates, %d refused defers, %.0f s\n", $name, $row['ok'] ? 'ok  ' : 'FAIL',
            implode(', ', $row['faults']), $row['recorded'] ?? 0, $row['runs'] ?? 0, $row['duplicates'] ?? 0, $row['refused'] ?? 0, $row['seconds']);
        foreach ($row['errors'] as $error) {
            echo "    $error\n";
        }
        return $row;
    }

    /** Kicks as cron would, every 2 s; a refused kick (database locked, full) is cron's bad luck. */
    private static function kick(Lab $lab, float $last): float
    {
        if (microtime(true) - $last < 2.0) {
            return $last;
        }
        try {
            $lab->ctl('kick');
        } catch (\RuntimeException) {
        }
        return microtime(true);
    }

    /** The report in Markdown: one row per scenario, then the hostile-input checks. */
    public static function report(array $rows, array $checks, bool $long, float $seconds): string
    {
        $out = sprintf("Mode: %s, %s, %.0f s in all, on %s (%d cores), PHP %s.\n\n", $long ? '`--long`' : '`--short`',
            date('Y-m-d'), $seconds, php_uname('s') . ' ' . php_uname('m'), (int) shell_exec('nproc'), PHP_VERSION);
        if ($rows) {
            $out .= "| scenario | server | faults injected | tasks | done | dead (meant to fail) | runs | duplicates | lost | stuck | refused defers | result |\n";
            $out .= "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n";
            $total = ['tasks' => 0, 'runs' => 0, 'duplicates' => 0, 'lost' => 0, 'stuck' => 0];
            foreach ($rows as $r) {
                $tasks = ($r['recorded'] ?? 0) + ($r['unrecorded'] ?? 0);
                $lost = count($r['lost'] ?? []) + count($r['unfinished'] ?? []);
                $out .= sprintf("| %s | %s | %s | %d | %d | %d | %d | %d | %d | %d | %d | %s |\n", $r['name'], $r['server'],
                    implode(', ', $r['faults']), $tasks, $r['states']['done'] ?? 0, $r['states']['dead'] ?? 0, $r['runs'] ?? 0,
                    $r['duplicates'] ?? 0, $lost, count($r['stuck'] ?? []), $r['refused'] ?? 0, $r['ok'] ? 'ok' : '**FAIL**');
                $total['tasks'] += $tasks;
                $total['runs'] += $r['runs'] ?? 0;
                $total['duplicates'] += $r['duplicates'] ?? 0;
                $total['lost'] += $lost;
                $total['stuck'] += count($r['stuck'] ?? []);
            }
            $out .= sprintf("\nIn all: %d tasks, %d runs of ordinary tasks, **lost %d**, **stuck %d**, duplicates %d (%.2f %%).\n",
                $total['tasks'], $total['runs'], $total['lost'], $total['stuck'], $total['duplicates'],
                100 * $total['duplicates'] / max(1, $total['tasks']));
            $reasons = $refusals = [];
            foreach ($rows as $r) {
                foreach ($r['reasons'] ?? [] as $reason => $n) {
                    $reasons[$reason] = ($reasons[$reason] ?? 0) + $n;
                }
                foreach ($r['refusals'] ?? [] as $refusal => $n) {
                    $refusals[$refusal] = ($refusals[$refusal] ?? 0) + $n;
                }
            }
            arsort($reasons);
            arsort($refusals);
            $out .= "\nWhy the tasks meant to fail died (last error, digits as N):\n\n";
            foreach ($reasons as $reason => $n) {
                $out .= "- $n × `" . str_replace('`', "'", $reason) . "`\n";
            }
            $out .= "\nWhy defer() or the deferring page was refused (each refusal was retried):\n\n";
            foreach (array_slice($refusals, 0, 12, true) as $refusal => $n) {
                $out .= "- $n × `" . str_replace('`', "'", $refusal) . "`\n";
            }
        }
        if ($checks) {
            $out .= "\n| hostile input | result | what |\n|---|---|---|\n";
            foreach ($checks as $c) {
                $out .= "| {$c['name']} | " . ($c['ok'] ? 'ok' : '**FAIL**') . " | {$c['summary']} |\n";
            }
        }
        return $out;
    }
}
