<?php

declare(strict_types=1);

namespace AsyncEngine\Chaos;

use AsyncEngine\Engine;

/**
 * The tasks the chaos runs defer: mostly ordinary work, and tasks meant to
 * fail in each way a PHP request can (throw, exit, fatal error, memory,
 * time limit), which must end dead with their reason.
 */
final class Workload
{
    /** Kinds meant to fail => a fragment of the error they must die with. */
    public const FAILURES = [
        'throw' => 'chaos: thrown on purpose',
        'exit' => 'without finishing',
        'fatal' => 'undefined function',
        'oom' => 'Allowed memory size',
        'timeout' => 'Maximum execution time',
    ];

    /** A line of an ids file, "id kind" (a deferrer killed mid-write may leave half a line). */
    public const RECORD = '/^([0-9A-Z]{26}) (\w+)$/';

    /** The kind of the $i-th task a deferrer adds: one in 40 is meant to fail. */
    public static function kind(int $i): string
    {
        if ($i % 40 !== 39) {
            return 'work';
        }
        $failures = array_keys(self::FAILURES);
        return $failures[intdiv($i, 40) % count($failures)];
    }

    /** Defers one task of $kind whose effect (a line "id attempt") goes to $effects. */
    public static function defer(string $kind, string $effects): string
    {
        $args = ['effects' => $effects, 'ms' => random_int(0, 20)];
        if ($kind === 'slow') {
            $args['ms'] = 3000;
        }
        $options = match ($kind) {
            // Ordinary work survives many faults; a short lease recovers fast.
            'work' => ['max_attempts' => 25, 'timeout' => 3],
            'slow' => ['max_attempts' => 25, 'timeout' => 30],
            default => ['max_attempts' => 2, 'timeout' => 5],
        };
        return Engine::defer('/worker.php', $kind, $args, $options);
    }
}
