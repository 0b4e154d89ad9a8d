<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Support\Servers;

/** `php -S` with 4 workers (PHP_CLI_SERVER_WORKERS). */
final class PhpServer extends WebServer
{
    protected function commands(): array
    {
        $command = ['env', 'PHP_CLI_SERVER_WORKERS=4', PHP_BINARY];
        if ($this->user) {
            array_unshift($command, 'setpriv', "--reuid={$this->user[0]}", "--regid={$this->user[1]}", '--clear-groups');
        }
        foreach ($this->engineIni() as $name => $value) {
            array_push($command, '-d', "$name=$value");
        }
        array_push($command, '-S', '127.0.0.1:' . $this->port, '-t', $this->docroot);
        if ($this->frontController !== null) {
            $command[] = $this->docroot . '/' . $this->frontController;
        }
        return [$command];
    }

    public function workerPids(): array
    {
        return self::descendants($this->pid());
    }
}
