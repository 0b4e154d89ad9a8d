<?php

declare(strict_types=1);

namespace AsyncEngine\Tests;

use AsyncEngine\Tests\Servers\ApacheModPhp;
use AsyncEngine\Tests\Servers\WebServer;

/** Dispatch through Apache 2.4 with mod_php (prefork). */
final class ApacheDispatchTest extends DispatchTestCase
{
    protected function newServer(?int $port = null): WebServer
    {
        return new ApacheModPhp($this->db, self::SECRET, $this->dir, $port);
    }
}
