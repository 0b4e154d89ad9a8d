<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Api;

use AsyncEngine\Engine;
use AsyncEngine\EngineException;
use AsyncEngine\InvalidTask;
use AsyncEngine\Tests\Support\EngineTestCase;

/** Every bad input gets a precise exception and leaves the database as it was. */
final class BadInputTest extends EngineTestCase
{
    public function badDefers(): iterable
    {
        $self = [];
        $self['me'] = &$self;
        $deep = [];
        $ref = &$deep;
        for ($i = 0; $i < 200; $i++) {
            $ref['d'] = [];
            $ref = &$ref['d'];
        }
        yield 'empty name' => ['/w.php', '', [], [], 'task name is empty'];
        yield 'long name' => ['/w.php', str_repeat('n', 256), [], [], 'the limit is 255'];
        yield 'name with NUL' => ['/w.php', "a\0b", [], [], 'control character'];
        yield 'name not UTF-8' => ['/w.php', "\xc3\x28", [], [], 'task name is not valid UTF-8'];
        yield 'empty endpoint' => ['', 't', [], [], 'endpoint is empty'];
        yield 'endpoint not a path' => ['worker.php', 't', [], [], 'is not a path'];
        yield 'other origin' => ['https://evil.example/steal', 't', [], [], 'absolute URL to another origin'];
        yield 'protocol-relative' => ['//evil.example/x', 't', [], [], 'absolute URL to another origin'];
        yield 'endpoint with space' => ['/a b.php', 't', [], [], 'not allowed in a URL path'];
        yield 'endpoint not UTF-8' => ["/\xff", 't', [], [], 'endpoint is not valid UTF-8'];
        yield 'object' => ['/w.php', 't', ['o' => new \stdClass()], [], 'an object of class stdClass at $args[\'o\']'];
        yield 'closure' => ['/w.php', 't', [fn () => 1], [], 'a closure at $args[0]'];
        yield 'resource' => ['/w.php', 't', ['f' => STDERR], [], 'a resource'];
        yield 'NAN' => ['/w.php', 't', ['x' => ['y' => NAN]], [], "NaN at \$args['x']['y']"];
        yield 'INF' => ['/w.php', 't', [-INF], [], 'JSON has no NAN or INF'];
        yield 'invalid UTF-8 value' => ['/w.php', 't', ['s' => "ok\xff"], [], 'not valid UTF-8 at $args[\'s\']'];
        yield 'invalid UTF-8 key' => ['/w.php', 't', ["k\xff" => 1], [], 'key'];
        yield 'too deep' => ['/w.php', 't', $deep, [], 'nested deeper than 128'];
        yield 'self-reference' => ['/w.php', 't', $self, [], 'nested deeper than 128'];
        yield 'too large' => ['/w.php', 't', [str_repeat('x', 1024 * 1024)], [], 'the limit is 1048576 bytes'];
        yield 'negative delay' => ['/w.php', 't', [], ['delay' => -1], "option 'delay' must not be negative"];
        yield 'delay as string' => ['/w.php', 't', [], ['delay' => '5'], "option 'delay' must be a number of seconds"];
        yield 'unknown option' => ['/w.php', 't', [], ['retries' => 3], "unknown option 'retries'"];
        yield 'priority float' => ['/w.php', 't', [], ['priority' => 1.5], "option 'priority' must be an integer"];
        yield 'max_attempts 0' => ['/w.php', 't', [], ['max_attempts' => 0], "option 'max_attempts' must be an integer from 1"];
        yield 'timeout 0' => ['/w.php', 't', [], ['timeout' => 0], "option 'timeout' must not be 0"];
        yield 'unique array' => ['/w.php', 't', [], ['unique' => []], "option 'unique' must be a non-empty string"];
        yield 'delay and at' => ['/w.php', 't', [], ['delay' => 1, 'at' => 2], "either option 'delay' or option 'at'"];
    }

    /** @dataProvider badDefers */
    public function testBadDeferIsRefusedAndChangesNothing(string $endpoint, string $name, array $args, array $options, string $message): void
    {
        Engine::defer('/w.php', 'existing', ['keep' => 1]);
        $before = $this->snapshot();
        try {
            Engine::defer($endpoint, $name, $args, $options);
            $this->fail('no exception');
        } catch (InvalidTask $e) {
            $this->assertStringContainsString($message, $e->getMessage());
        }
        $this->assertSame($before, $this->snapshot());
    }

    public function testTheArgsLimitIsASetting(): void
    {
        Engine::configure(['max_args_size' => 64]);
        Engine::defer('/w.php', 't', [str_repeat('x', 50)]);
        $this->expectException(InvalidTask::class);
        $this->expectExceptionMessage('the limit is 64 bytes (setting max_args_size)');
        Engine::defer('/w.php', 't', [str_repeat('x', 70)]);
    }

    public function testBadSettingsAreRefusedWhole(): void
    {
        foreach ([
            [['max_workers' => 0], "setting 'max_workers' must be an integer from 1 to 1024"],
            [['timeout' => -5], "setting 'timeout' must be a number of seconds greater than 0"],
            [['secret' => 'short'], "setting 'secret' must be at least 16 characters long"],
            [['base_url' => 'example.com'], "setting 'base_url' must be like"],
            [['nonsense' => 1], "unknown setting 'nonsense'"],
            // A NUL byte in a message is shown escaped (PHP cannot throw it raw).
            [["a\0b" => 1], "unknown setting 'a\\0b'"],
            [['max_workers' => 8, 'retention' => 'forever'], "setting 'retention'"],
        ] as [$settings, $message]) {
            try {
                Engine::configure($settings);
                $this->fail('no exception for ' . json_encode($settings));
            } catch (EngineException $e) {
                $this->assertSame(EngineException::class, get_class($e));
                $this->assertStringContainsString($message, $e->getMessage());
            }
        }
        $this->assertSame(4, Engine::stats()['max_workers'], 'a refused configure() changes nothing');
    }

    public function badStrings(): iterable
    {
        foreach (['invalid UTF-8' => ["\xc3\x28", 'is not valid UTF-8'], 'NUL' => ["01J\0x", 'contains a NUL byte'],
            'over-long' => [str_repeat('7', 4096), 'bytes long; the limit is']] as $what => [$value, $message]) {
            yield "status, $what" => [fn () => Engine::status($value), $message];
            yield "cancel, $what" => [fn () => Engine::cancel($value), $message];
            yield "retry, $what" => [fn () => Engine::retry($value), $message];
            yield "tasks, $what" => [fn () => Engine::tasks($value), $message];
        }
    }

    /** @dataProvider badStrings */
    public function testEveryStringArgumentRefusesBadTextWithInvalidTask(\Closure $call, string $message): void
    {
        $id = Engine::defer('/w.php', 'existing', ['keep' => 1], ['delay' => 60]);
        $before = $this->snapshot();
        try {
            $call();
            $this->fail('no exception');
        } catch (InvalidTask $e) {
            $this->assertStringContainsString($message, $e->getMessage());
        }
        $this->assertSame($before, $this->snapshot());
        $this->assertSame('queued', Engine::status($id)['state']);
    }

    public function testSecretsArePrintedInNoMessage(): void
    {
        $messages = [];
        foreach ([['secret' => 'hunter2-short'], ['secret' => 424242424242], ['database' => 'postgress://app:hunter2-pw@db.example/app'],
            ['database' => 'postgres://app@127.0.0.1:1/app?password=hunter2-pw&connect_timeout=1']] as $settings) {
            try {
                Engine::configure($settings);
                Engine::stats();
                $this->fail('no exception for ' . array_key_first($settings));
            } catch (EngineException $e) {
                $messages[] = $e->getMessage();
            } finally {
                Engine::configure(['database' => $this->db]);
            }
        }
        $this->assertCount(4, $messages);
        foreach ($messages as $m) {
            $this->assertStringNotContainsString('hunter2', $m);
            $this->assertStringNotContainsString('424242424242', $m);
        }
        $this->assertStringContainsString("unknown scheme 'postgress'", $messages[2]);
        $this->assertStringContainsString('postgress://app:***@db.example/app', $messages[2]);
    }

    public function testWrongPhpTypesAreTypeErrors(): void
    {
        $this->expectException(\TypeError::class);
        Engine::defer('/w.php', 't', 'not an array');
    }

    public function testSameOriginUrlsBecomePaths(): void
    {
        Engine::configure(['base_url' => 'https://shop.example']);
        $id = Engine::defer('https://shop.example/jobs/run.php?q=1', 't');
        $this->assertSame('/jobs/run.php?q=1', Engine::status($id)['endpoint']);
    }
}
