<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Dispatch;

use AsyncEngine\Tests\Support\DispatchTestCase;
use AsyncEngine\Tests\Support\Servers\ApacheModPhp;
use AsyncEngine\Tests\Support\Servers\WebServer;

/** Dispatch through Apache 2.4 with mod_php (prefork). */
final class ApacheDispatchTest extends DispatchTestCase
{
    protected function newServer(?int $port = null): WebServer
    {
        return new ApacheModPhp($this->db, self::SECRET, $this->dir, $port);
    }
}
