<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Servers;

/** `php -S` with 4 workers (PHP_CLI_SERVER_WORKERS). */
final class PhpServer extends WebServer
{
    protected function commands(): array
    {
        return [['env', 'PHP_CLI_SERVER_WORKERS=4', PHP_BINARY,
            '-d', 'async_engine.database=' . $this->database,
            '-d', 'async_engine.secret=' . $this->secret,
            '-S', '127.0.0.1:' . $this->port, '-t', self::docroot()]];
    }

    public function workerPids(): array
    {
        return self::descendants($this->pid());
    }
}
