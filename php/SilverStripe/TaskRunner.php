<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe;

use AsyncEngine\Engine;
use AsyncEngine\RequestRejected;
use AsyncEngine\Task;
use SilverStripe\Core\ClassInfo;
use SilverStripe\Core\Injector\Injectable;
use SilverStripe\Core\Injector\Injector;

/**
 * Runs the tasks of one engine request: every AsyncTask class in the
 * manifest is a handler, created through the Injector for each task, and
 * CronTask occurrences run through CronTaskSchedules.
 */
class TaskRunner
{
    use Injectable;

    /**
     * Accepts this request's slot and runs due tasks until none is due or the
     * batch (Async.batch_time, Async.max_tasks) is spent; returns how many ran.
     *
     * @throws RequestRejected when the request is not a genuine self-request
     */
    public function serve(): int
    {
        Async::configureEngine();
        $handlers = [];
        foreach (ClassInfo::implementorsOf(AsyncTask::class) as $class) {
            if ((new \ReflectionClass($class))->isInstantiable()) {
                $handlers[$class] = fn (array $args, Task $task) => $this->run($class, $args, $task);
            }
        }
        if (interface_exists(\SilverStripe\CronTask\Interfaces\CronTask::class)) {
            $handlers[CronTaskSchedules::TASK] = [CronTaskSchedules::class, 'run'];
        }
        $config = Async::config();
        return Engine::serve($handlers, [
            'batch_time' => (float) $config->get('batch_time'),
            'max_tasks' => (int) $config->get('max_tasks'),
        ]);
    }

    /** Runs one task; what it throws fails the task (Engine::serve() records it). */
    protected function run(string $class, array $args, Task $task): void
    {
        Async::setCurrentTask($task);
        try {
            /** @var AsyncTask $handler */
            $handler = Injector::inst()->create($class);
            $handler->process($args);
        } finally {
            Async::setCurrentTask(null);
        }
    }
}
