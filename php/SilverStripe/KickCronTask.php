<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe;

use AsyncEngine\Engine;
use SilverStripe\CronTask\Interfaces\CronTask;

// Declared only where silverstripe/crontask is installed, so that the module
// loads and dev/build runs without it. The declaration stays at the top level
// (after an early return, not inside an `if`): SilverStripe's class manifest
// only sees top-level classes.
if (!interface_exists(CronTask::class)) {
    return;
}

/**
 * Every minute from `sake dev/cron`: reaps expired leases and slots and sends
 * what is due, so an engine whose server restarted with tasks queued starts
 * again without a page visit.
 */
class KickCronTask implements CronTask
{
    public function getSchedule()
    {
        return '* * * * *';
    }

    public function process()
    {
        Async::configureEngine();
        $sent = Engine::kick();
        echo "async-engine: kick sent $sent task request(s)\n";
    }
}
