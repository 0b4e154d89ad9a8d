<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe;

use AsyncEngine\Engine;
use SilverStripe\Control\Director;
use SilverStripe\Control\HTTPRequest;
use SilverStripe\Dev\BuildTask;

/**
 * `sake dev/tasks/async-engine`: the engine's counts and its dead tasks with
 * their errors. `retry=ID` (or `retry=all`) requeues dead tasks,
 * `purge=finished` deletes done and cancelled tasks, `purge=all` dead ones too.
 */
class EngineAdminTask extends BuildTask
{
    private static $segment = 'async-engine';

    protected $title = 'async-engine: status, schedules, dead tasks, retry and purge';

    protected $description = 'Shows Engine::stats(), schedules and dead tasks. Options: retry=ID|all, '
        . 'purge=finished|all, limit=N (dead tasks listed, default 50).';

    /** @param HTTPRequest $request */
    public function run($request)
    {
        Async::configureEngine();
        $lines = [];
        $retry = (string) $request->getVar('retry');
        if ($retry !== '') {
            $ids = $retry === 'all' ? array_column(Engine::tasks('dead', 1000), 'id') : [$retry];
            $requeued = count(array_filter(array_map([Engine::class, 'retry'], $ids)));
            $lines[] = "Requeued $requeued dead task(s)" . ($requeued === 0 && $retry !== 'all' ? " ($retry is not a dead task)" : '');
        }
        $purge = (string) $request->getVar('purge');
        if ($purge !== '') {
            if (!in_array($purge, ['finished', 'all'], true)) {
                $lines[] = "purge must be \"finished\" or \"all\", got \"$purge\": nothing purged";
            } else {
                $n = Engine::purge(0, $purge === 'all');
                $lines[] = "Purged $n " . ($purge === 'all' ? 'done, cancelled and dead' : 'done and cancelled') . ' task(s)';
            }
        }

        $stats = Engine::stats();
        $lines[] = sprintf(
            'Tasks: %d queued, %d running, %d done, %d dead, %d cancelled',
            $stats['queued'],
            $stats['running'],
            $stats['done'],
            $stats['dead'],
            $stats['cancelled']
        );
        $lines[] = sprintf('Requests in flight: %d of %d', $stats['in_flight'], $stats['max_workers']);
        $lines[] = 'Next due: ' . ($stats['next_due'] === null ? 'nothing queued' : date('Y-m-d H:i:s', (int) $stats['next_due']))
            . ($stats['oldest_due_age'] === null ? '' : sprintf(' (oldest due task waiting %.1f s)', $stats['oldest_due_age']));

        $schedules = Engine::schedules();
        $lines[] = '';
        $lines[] = $schedules ? 'Schedules:' : 'No schedules.';
        $time = fn (?float $t): string => $t === null ? '-' : date('Y-m-d H:i:s', (int) $t);
        foreach ($schedules as $s) {
            $lines[] = sprintf(
                '  %s  "%s" %s  next %s  last run %s (%s)  runs %d  skipped %d',
                $s['name'],
                $s['when'],
                $s['timezone'],
                $time($s['next_at']),
                $time($s['last_run_at']),
                $s['last_state'] ?? '-',
                $s['runs'],
                $s['skipped']
            );
        }

        $limit = max(1, min(1000, (int) ($request->getVar('limit') ?: 50)));
        $dead = Engine::tasks('dead', $limit);
        $lines[] = '';
        $lines[] = $dead ? sprintf('Dead tasks (newest first, %d shown):', count($dead)) : 'No dead tasks.';
        foreach ($dead as $task) {
            $lines[] = sprintf(
                '  %s  %s  %s  attempts %d  failed %s',
                $task['id'],
                $task['endpoint'],
                $task['task'],
                $task['attempt'],
                date('Y-m-d H:i:s', (int) $task['finished_at'])
            );
            $lines[] = '      ' . str_replace("\n", "\n      ", (string) $task['last_error']);
        }
        $text = implode("\n", $lines) . "\n";
        echo Director::is_cli() ? $text : '<pre>' . htmlspecialchars($text) . '</pre>';
    }
}
