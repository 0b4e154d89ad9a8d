<?php

declare(strict_types=1);

namespace Example;

/** Stands in for a slow mail API: appends the message to var/outbox.log. */
final class Mailer
{
    public static function send(string $to, string $subject): void
    {
        usleep(200000); // the slow part the page does not wait for
        $line = sprintf("%s\t%s\t%s\t%s\n", date('c'), $to, $subject, PHP_SAPI);
        file_put_contents(dirname(__DIR__) . '/var/outbox.log', $line, FILE_APPEND | LOCK_EX);
    }
}
