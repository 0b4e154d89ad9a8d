<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe\QueuedJobs;

use AsyncEngine\SilverStripe\Async;
use Symbiote\QueuedJobs\DataObjects\QueuedJobDescriptor;

/**
 * QueuedJobs' queue handler (the `QueueHandler` service): every job queued
 * with QueuedJobService::queueJob() gets an engine task that runs it through
 * a self-request at its start time, so no queue runner in cron is needed.
 * The job itself runs through QueuedJobService::runJob(), keeping QueuedJobs'
 * status, logging and retry behaviour.
 */
class EngineQueueHandler
{
    /** A job to start now. */
    public function startJobOnQueue(QueuedJobDescriptor $job)
    {
        Async::defer(RunQueuedJob::class, ['job' => (int) $job->ID]);
    }

    /** A job to start at `$date` (a date-time string, as QueuedJobs gives it). */
    public function scheduleJob(QueuedJobDescriptor $job, $date)
    {
        $at = strtotime((string) $date);
        Async::defer(RunQueuedJob::class, ['job' => (int) $job->ID], $at === false ? [] : ['at' => $at]);
    }
}
