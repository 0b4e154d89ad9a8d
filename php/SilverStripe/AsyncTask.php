<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe;

/**
 * A task run in the background through Async::defer(). Instances are created
 * through the Injector, so a task can declare `private static $dependencies`
 * and use the ORM. Returning completes the task; throwing fails it, and the
 * engine retries it with backoff until max_attempts.
 */
interface AsyncTask
{
    /** @param array<mixed> $args the args given to Async::defer() */
    public function process(array $args): void;
}
