<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Api;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\EngineTestCase;

/**
 * A task request that ends without complete() or fail() (exit, fatal error,
 * uncaught exception, a handler that forgets) fails its task, saying so, and
 * frees its slot. Each case runs as its own PHP process, as a request would.
 */
final class ShutdownTest extends EngineTestCase
{
    private function endpointScript(string $body): string
    {
        [$slot, $endpoint] = $this->sentSlots()[0];
        $code = '<?php $_SERVER["REQUEST_METHOD"] = "POST"; $_SERVER["REQUEST_URI"] = ' . var_export($endpoint, true) . ';';
        foreach (self::signedHeaders($slot, $endpoint) as $name => $value) {
            $code .= '$_SERVER[' . var_export('HTTP_' . strtoupper(str_replace('-', '_', $name)), true) . '] = ' . var_export($value, true) . ';';
        }
        return $code . "\n" . $body;
    }

    public function endings(): iterable
    {
        yield 'exit in a handler' => [
            'AsyncEngine\Engine::serve(["t" => function () { exit(3); }]);',
            'the request ended without complete() or fail() (uncaught exception, exit',
        ];
        yield 'fatal error' => [
            '$task = AsyncEngine\Engine::accept(); undefined_function_xyz();',
            'fatal error: Uncaught Error: Call to undefined function undefined_function_xyz()',
        ];
        yield 'uncaught exception' => [
            '$task = AsyncEngine\Engine::accept(); throw new RuntimeException("no luck");',
            'fatal error: Uncaught RuntimeException: no luck',
        ];
        yield 'memory exhausted' => [
            'ini_set("memory_limit", "16M"); $task = AsyncEngine\Engine::accept(); $a = str_repeat("x", 64 << 20);',
            'Allowed memory size',
        ];
        yield 'forgot to finish' => [
            '$task = AsyncEngine\Engine::accept(); echo "done?";',
            'the request ended without complete() or fail()',
        ];
    }

    /** @dataProvider endings */
    public function testARequestEndingWithoutFinishingFailsItsTask(string $body, string $error): void
    {
        $id = Engine::defer('/w.php', 't');
        $this->runPhp($this->endpointScript($body));
        $status = Engine::status($id);
        $this->assertSame('queued', $status['state'], 'failed, to be retried');
        $this->assertSame(1, $status['attempt']);
        $this->assertStringContainsString($error, (string) $status['last_error']);
        $this->assertSame(0, Engine::stats()['running']);
    }

    public function testTasksClaimedAheadOfAnExitGoBackUnharmed(): void
    {
        Engine::configure(['max_workers' => 1]);
        $ids = [];
        foreach (['ok', 'exit', 'ok', 'ok'] as $name) {
            $ids[] = Engine::defer('/w.php', $name);
        }
        // The first quick task makes serve() claim the other three ahead in
        // one write; the second ends the request.
        [$code, $out, $err] = $this->runPhp($this->endpointScript(
            'AsyncEngine\Engine::configure(["max_workers" => 1]);
            AsyncEngine\Engine::serve(["ok" => function () { echo "ok "; },
                "exit" => function () { exit(3); }]);'
        ));
        $this->assertSame('ok ', $out, $err);
        $states = array_map(fn ($id) => array_intersect_key(Engine::status($id), ['state' => 0, 'attempt' => 0]), $ids);
        $this->assertSame([['state' => 'done', 'attempt' => 1], ['state' => 'queued', 'attempt' => 1],
            ['state' => 'queued', 'attempt' => 0], ['state' => 'queued', 'attempt' => 0]], $states,
            'the task that exited failed; the two it held up never started and spent no attempt');
        $this->assertStringContainsString('without complete() or fail()', (string) Engine::status($ids[1])['last_error']);
        $this->assertNull(Engine::status($ids[2])['last_error']);
        $this->assertSame(0, Engine::stats()['running']);
        $this->assertSame([['/w.php']], array_map(fn ($s) => [$s[1]], $this->sentSlots()),
            'the freed slot went back to the queue that still has work');
    }

    public function testTheSlotIsFreedAndHandedToTheNextDueEndpoint(): void
    {
        Engine::configure(['max_workers' => 1]);
        Engine::defer('/a.php', 't');
        Engine::defer('/b.php', 't');
        $this->assertSame([['/a.php']], array_map(fn ($s) => [$s[1]], $this->sentSlots()));
        [$code, $out, $err] = $this->runPhp($this->endpointScript(
            'echo AsyncEngine\Engine::serve(["t" => function () {}]);'
        ));
        $this->assertSame('1', $out, $err);
        $slots = $this->sentSlots();
        $this->assertCount(1, $slots);
        $this->assertSame('/b.php', $slots[0][1], 'the freed slot went to the next due endpoint');
        $this->assertSame(1, Engine::stats()['done']);
    }
}
