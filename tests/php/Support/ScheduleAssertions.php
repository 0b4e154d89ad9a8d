<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Support;

/**
 * Reading what a schedule's occurrences did: the worker's `occurrence`
 * handler writes one line per run to $this->effects.
 */
trait ScheduleAssertions
{
    /** Occurrence lines the worker wrote: [schedule, scheduled_at, attempt, started_at, pid]. */
    protected function occurrences(): array
    {
        $out = [];
        foreach (is_file($this->effects) ? file($this->effects, FILE_IGNORE_NEW_LINES) : [] as $line) {
            [$schedule, $at, $attempt, $started, $pid] = explode(' ', $line);
            $out[] = [$schedule, (float) $at, (int) $attempt, (float) $started, (int) $pid];
        }
        return $out;
    }

    /**
     * Asserts that $runs are consecutive occurrences $period s apart (exact
     * multiples: no drift), each once, each started within 2 s of its time;
     * returns the largest start delay. An occurrence claimed once the next
     * one is due is skipped, so consecutive runs already show each was
     * claimed in time; the start bound leaves room for a loaded machine
     * between claim and start (bench/run measures start latency).
     */
    protected function assertOnTimeOccurrences(array $runs, float $period, int $atLeast): float
    {
        $this->assertGreaterThanOrEqual($atLeast, count($runs), 'occurrences: ' . json_encode($runs) . $this->serversLog());
        $times = array_column($runs, 1);
        $this->assertSame(count($times), count(array_unique($times)), 'an occurrence ran twice: ' . json_encode($runs));
        $latest = 0.0;
        foreach ($runs as $i => [, $at, $attempt, $started]) {
            $this->assertSame(1, $attempt);
            $this->assertSame(round($times[0] + $i * $period, 3), round($at, 3), "occurrence $i is not on the period");
            $late = $started - $at;
            $this->assertGreaterThanOrEqual(-0.01, $late, "occurrence $i started early");
            $this->assertLessThan(2.0, $late, "occurrence $i started {$late} s late");
            $latest = max($latest, $late);
        }
        return $latest;
    }

    /** The logs of the servers under test, for failure messages. */
    abstract protected function serversLog(): string;
}
