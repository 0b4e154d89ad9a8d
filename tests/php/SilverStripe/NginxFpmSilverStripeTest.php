<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\SilverStripe;

use AsyncEngine\Tests\Support\Servers\NginxFpm;
use AsyncEngine\Tests\Support\Servers\WebServer;

final class NginxFpmSilverStripeTest extends SilverStripeDispatchTestCase
{
    protected static function newServer(string $logs, int $port): WebServer
    {
        return new NginxFpm(null, null, $logs, $port);
    }

    protected function sapi(): string
    {
        return 'fpm-fcgi';
    }
}
