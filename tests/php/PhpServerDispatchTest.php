<?php

declare(strict_types=1);

namespace AsyncEngine\Tests;

use AsyncEngine\Tests\Servers\PhpServer;
use AsyncEngine\Tests\Servers\WebServer;

/** Dispatch through `php -S` with 4 workers. */
final class PhpServerDispatchTest extends DispatchTestCase
{
    protected function newServer(?int $port = null): WebServer
    {
        return new PhpServer($this->db, self::SECRET, $this->dir, $port);
    }
}
