<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe;

use AsyncEngine\Engine;
use AsyncEngine\EngineException;
use AsyncEngine\IncompatibleExtension;
use AsyncEngine\Task;
use SilverStripe\Core\ClassInfo;
use SilverStripe\Core\Extension;
use SilverStripe\Core\Flushable;
use SilverStripe\Core\Injector\Injector;
use SilverStripe\CronTask\CronTaskStatus;
use SilverStripe\CronTask\Interfaces\CronTask;

/**
 * Runs every CronTask of the manifest (silverstripe/crontask) through the
 * engine, with no system crontab: each class with a getSchedule() expression
 * becomes an engine schedule (`crontask:<class>`) whose occurrences run
 * through /_async/run.
 * Synchronised after dev/build (an extension of DatabaseAdmin) and on every
 * flush (when the manifest may have changed); classes gone, or whose
 * schedule became empty, are unscheduled.
 *
 * CronTaskStatus is the guard shared with `sake dev/cron`: a run here records
 * LastRun before process(), as CronTaskController does, so dev/cron does not
 * run the task again in that minute; and an occurrence whose minute dev/cron
 * already ran is skipped.
 */
class CronTaskSchedules extends Extension implements Flushable
{
    /** Prefix of the engine schedule names this class owns. */
    public const PREFIX = 'crontask:';

    /** The engine task name of a CronTask occurrence (TaskRunner's handler). */
    public const TASK = 'crontask';

    /** After dev/build. */
    public function onAfterBuild(): void
    {
        self::syncOrLog('dev/build');
    }

    /** On flush: the manifest may have changed. */
    public static function flush(): void
    {
        self::syncOrLog('flush');
    }

    /**
     * sync(), but a missing or mismatched extension or an unusable engine
     * database (a PHP without the extension running dev/build, a first flush
     * before configuration) is logged instead of breaking the build.
     */
    private static function syncOrLog(string $when): void
    {
        try {
            self::sync();
        } catch (EngineException | IncompatibleExtension $e) {
            error_log("async-engine: CronTasks not scheduled on $when: " . $e->getMessage());
        }
    }

    /**
     * Schedules every CronTask with a schedule, unschedules the rest; returns
     * [class => schedule expression or an error message] for what was scheduled
     * or refused. An expression the engine cannot read (such as crontab's L, W
     * or # forms) is logged and left to `sake dev/cron`.
     *
     * @return array<string, string>
     */
    public static function sync(): array
    {
        if (!interface_exists(CronTask::class)) {
            return []; // silverstripe/crontask is not installed
        }
        Async::configureEngine();
        $wanted = [];
        $report = [];
        foreach (ClassInfo::implementorsOf(CronTask::class) as $class) {
            if ($class === KickCronTask::class || !(new \ReflectionClass($class))->isInstantiable()) {
                continue; // the kick is cron's safety net, not a schedule of the engine's
            }
            $when = (string) Injector::inst()->create($class)->getSchedule();
            if ($when === '') {
                continue;
            }
            $name = self::PREFIX . $class;
            try {
                Engine::schedule($name, $when, Async::endpoint(), self::TASK, ['class' => $class], [
                    'timezone' => date_default_timezone_get(),
                ]);
                $wanted[$name] = true;
                $report[$class] = $when;
            } catch (EngineException $e) {
                error_log("async-engine: CronTask $class is left to sake dev/cron: " . $e->getMessage());
                $report[$class] = 'not scheduled: ' . $e->getMessage();
            }
        }
        foreach (Engine::schedules() as $schedule) {
            if (str_starts_with($schedule['name'], self::PREFIX) && !isset($wanted[$schedule['name']])) {
                Engine::unschedule($schedule['name']);
            }
        }
        return $report;
    }

    /**
     * Runs one occurrence of a CronTask (TaskRunner's `crontask` handler),
     * unless `sake dev/cron` already ran it in the occurrence's minute.
     */
    public static function run(array $args, Task $task): void
    {
        $class = (string) ($args['class'] ?? '');
        if (!is_a($class, CronTask::class, true)) {
            throw new \InvalidArgumentException("'$class' is not a CronTask class (was it removed?)");
        }
        $at = (float) (Engine::status($task->id)['scheduled_at'] ?? time());
        $status = CronTaskStatus::get_status($class);
        if ($task->attempt === 1 && $status && $status->LastRun
            && date('Y-m-d H:i', strtotime((string) $status->LastRun)) === date('Y-m-d H:i', (int) $at)) {
            return; // sake dev/cron ran it in this minute already
        }
        CronTaskStatus::update_status($class, true);
        Injector::inst()->create($class)->process();
    }
}
