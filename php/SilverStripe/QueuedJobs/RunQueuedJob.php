<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe\QueuedJobs;

use AsyncEngine\SilverStripe\Async;
use AsyncEngine\SilverStripe\AsyncTask;
use SilverStripe\Core\Config\Configurable;
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
 * that instant, since a read transaction cannot then become a write one. A
 * job left new and unlocked after runJob() is tried again in this request
 * after a short pause (`lock_tries` in all, the pauses growing by
 * `lock_pause_ms`); after the last try the task fails, and the engine
 * retries it after its backoff instead of the job waiting for ever.
 */
class RunQueuedJob implements AsyncTask
{
    use Configurable;

    private static $dependencies = [
        'queuedJobService' => '%$' . QueuedJobService::class,
    ];

    /** Tries of runJob() in one request while the job lock cannot be taken. */
    private static int $lock_tries = 4;

    /** The pause before try N + 1 is N times this, in milliseconds. */
    private static int $lock_pause_ms = 50;

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
        $tries = max(1, (int) static::config()->get('lock_tries'));
        $pauseMs = max(0, (int) static::config()->get('lock_pause_ms'));
        for ($try = 1; ; $try++) {
            $this->queuedJobService->runJob($id);
            $after = QueuedJobDescriptor::get()->byID($id);
            $taken = !($after && $after->JobStatus === QueuedJob::STATUS_NEW && !$after->Worker);
            if ($taken || $try >= $tries) {
                break;
            }
            usleep($try * 1000 * $pauseMs);
        }
        if ($after && $after->JobStatus === QueuedJob::STATUS_WAIT) {
            Async::defer(self::class, ['job' => $id]);
        } elseif (!$taken) {
            throw new \RuntimeException("QueuedJobs job $id did not start: its job lock could not be taken "
                . "in $tries tries (on SQLite, most often another process writing at that instant); it is retried");
        }
    }
}
