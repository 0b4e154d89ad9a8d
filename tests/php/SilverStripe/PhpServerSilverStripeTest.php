<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\SilverStripe;

use AsyncEngine\Tests\Support\Servers\PhpServer;
use AsyncEngine\Tests\Support\Servers\WebServer;

final class PhpServerSilverStripeTest extends SilverStripeDispatchTestCase
{
    protected static function newServer(string $logs, int $port): WebServer
    {
        return new PhpServer(null, null, $logs, $port);
    }

    protected function sapi(): string
    {
        return 'cli-server';
    }
}
