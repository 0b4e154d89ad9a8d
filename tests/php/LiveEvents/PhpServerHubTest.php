<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\LiveEvents;

use AsyncEngine\Tests\Support\HubTestCase;
use AsyncEngine\Tests\Support\Servers\PhpServer;
use AsyncEngine\Tests\Support\Servers\WebServer;

final class PhpServerHubTest extends HubTestCase
{
    protected function makeServer(): WebServer
    {
        return new PhpServer($this->db, self::SECRET, $this->dir);
    }
}
