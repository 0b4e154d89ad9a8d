<?php

declare(strict_types=1);

namespace AsyncEngine\Tests;

use AsyncEngine\Tests\Servers\PhpServer;
use AsyncEngine\Tests\Servers\WebServer;

final class PhpServerHubTest extends HubTestCase
{
    protected function makeServer(): WebServer
    {
        return new PhpServer($this->db, self::SECRET, $this->dir);
    }
}
