<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\LiveEvents;

use AsyncEngine\Tests\Support\HubTestCase;
use AsyncEngine\Tests\Support\Servers\NginxFpm;
use AsyncEngine\Tests\Support\Servers\WebServer;

final class NginxFpmHubTest extends HubTestCase
{
    protected function makeServer(): WebServer
    {
        return new NginxFpm($this->db, self::SECRET, $this->dir);
    }
}
