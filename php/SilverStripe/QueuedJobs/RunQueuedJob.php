<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe\QueuedJobs;

use AsyncEngine\SilverStripe\Async;
use AsyncEngine\SilverStripe\AsyncTask;
use SilverStripe\ORM\FieldType\DBDatetime;
use Symbiote\QueuedJobs\DataObjects\QueuedJobDescriptor;
use Symbiote\QueuedJobs\Services\QueuedJob;
use Symbiote\QueuedJobs\Services\QueuedJobService;

/**
 * The engine task EngineQueueHandler defers: runs one QueuedJobs job when it
 * is waiting to start (new or paused for a restart) and due. A job that
 * stops to release memory or time (status Wait) gets a new task at once; one
 * moved to a later StartAfter gets a task at that time.
 *
 * QueuedJobs swallows a failure to take its job lock (it logs it at debug
 * level only). On SQLite that happens whenever another process is writing at
 * that instant, since a read transaction cannot then become a write one; a
 * job left new and unlocked after runJob() therefore fails this task, and the
 * engine retries it after its backoff instead of the job waiting for ever.
 */
class RunQueuedJob implements AsyncTask
{
    private static $dependencies = [
        'queuedJobService' => '%$' . QueuedJobService::class,
    ];

    /** @var QueuedJobService set by the Injector */
    public $queuedJobService;

    public function process(array $args): void
    {
        $id = (int) ($args['job'] ?? 0);
        $job = QueuedJobDescriptor::get()->byID($id);
        if (!$job || !in_array($job->JobStatus, [QueuedJob::STATUS_NEW, QueuedJob::STATUS_WAIT], true)) {
            return; // gone, or already run, running, paused or broken: QueuedJobs owns it now
        }
        $startAfter = $job->StartAfter ? strtotime((string) $job->StartAfter) : false;
        if ($startAfter !== false && $startAfter > DBDatetime::now()->getTimestamp()) {
            Async::defer(self::class, ['job' => $id], ['at' => $startAfter]);
            return;
        }
        $this->queuedJobService->runJob($id);
        $after = QueuedJobDescriptor::get()->byID($id);
        if ($after && $after->JobStatus === QueuedJob::STATUS_WAIT) {
            Async::defer(self::class, ['job' => $id]);
        } elseif ($after && $after->JobStatus === QueuedJob::STATUS_NEW && !$after->Worker) {
            throw new \RuntimeException("QueuedJobs job $id did not start: its job lock could not be taken "
                . '(on SQLite, most often another process writing at that instant); it is retried');
        }
    }
}
