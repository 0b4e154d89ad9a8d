<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Api;

use AsyncEngine\Tests\Support\EngineTestCase;
use AsyncEngine\Tests\Support\Servers\PhpServer;

/**
 * What the sender thread of a persistent worker meets in the background
 * reaches PHP's error log: here, a database replaced under a running server.
 */
final class LoggingTest extends EngineTestCase
{
    public function testAStorageErrorMetInTheBackgroundIsLoggedOnce(): void
    {
        $this->requireSqlite('replaces the database file');
        $log = $this->dir . '/php-error.log';
        $server = (new PhpServer($this->db, self::SECRET, $this->dir))->ini(['error_log' => $log]);
        $server->start();
        try {
            // A worker defers a delayed task: from now on its sender watches the queue.
            [$status, $body] = $server->request('/defer.php?n=1&delay=60');
            $this->assertSame(200, $status, $body . $server->log());
            usleep(1200000); // its sender has read the queue (and so opened the file) by now
            // The file is replaced (a new inode) while the server runs.
            copy($this->db, $this->db . '.copy');
            rename($this->db . '.copy', $this->db);
            $deadline = microtime(true) + 5;
            do {
                usleep(100000);
                $text = is_file($log) ? (string) file_get_contents($log) : '';
            } while (!str_contains($text, 'background') && microtime(true) < $deadline);
            $this->assertMatchesRegularExpression(
                "~^\\[[^\\]]+ UTC\\] async_engine: the background sender could not read the queue: database '[^']+' was replaced or deleted~m",
                $text,
                $server->log()
            );
            usleep(1500000); // three more polls meet the same error
            $this->assertSame(1, substr_count((string) file_get_contents($log), 'the background sender could not read the queue'),
                'the same line is not repeated at every poll');
        } finally {
            $server->stop();
        }
    }
}
