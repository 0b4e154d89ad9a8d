<?php

declare(strict_types=1);

namespace AsyncEngine\Tests;

use AsyncEngine\Tests\Servers\NginxFpm;
use AsyncEngine\Tests\Servers\WebServer;

final class NginxFpmHubTest extends HubTestCase
{
    protected function makeServer(): WebServer
    {
        return new NginxFpm($this->db, self::SECRET, $this->dir);
    }
}
