<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Dispatch;

/** Dispatch through nginx + php-fpm, pm dynamic with pm.max_requests = 10 (workers recycled). */
final class NginxFpmDynamicDispatchTest extends NginxFpmDispatchTest
{
    protected function pm(): string
    {
        return 'dynamic';
    }

    protected function workersAtOnce(): int
    {
        return 2; // pm.start_servers: the pool adds more at most one a second
    }
}
