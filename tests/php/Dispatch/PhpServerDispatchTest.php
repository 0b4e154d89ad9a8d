<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Dispatch;

use AsyncEngine\Tests\Support\DispatchTestCase;
use AsyncEngine\Tests\Support\Servers\PhpServer;
use AsyncEngine\Tests\Support\Servers\WebServer;

/** Dispatch through `php -S` with 4 workers. */
final class PhpServerDispatchTest extends DispatchTestCase
{
    protected function newServer(?int $port = null): WebServer
    {
        return new PhpServer($this->db, self::SECRET, $this->dir, $port);
    }
}
