<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Api;

use PHPUnit\Framework\TestCase;

/** stubs/async_engine.stub.php declares exactly what the extension defines. */
final class StubTest extends TestCase
{
    private const CLASSES = [
        'AsyncEngine\Engine', 'AsyncEngine\Task', 'AsyncEngine\EngineException',
        'AsyncEngine\InvalidTask', 'AsyncEngine\RequestRejected', 'AsyncEngine\StorageError', 'AsyncEngine\QueueFull',
    ];

    public function testTheStubMatchesTheLoadedExtension(): void
    {
        require_once dirname(__DIR__) . '/fixtures/describe.php';
        $extension = async_engine_describe(self::CLASSES);
        $this->assertSame(self::CLASSES, array_keys($extension));

        // Load the stub in a PHP process without the extension.
        $code = sprintf(
            '<?php require %s; require %s; echo json_encode(async_engine_describe(%s));',
            var_export(dirname(__DIR__) . '/fixtures/describe.php', true),
            var_export(dirname(__DIR__, 3) . '/stubs/async_engine.stub.php', true),
            var_export(self::CLASSES, true)
        );
        $script = tempnam(sys_get_temp_dir(), 'stub') . '.php';
        file_put_contents($script, $code);
        $env = ['PHP_INI_SCAN_DIR' => PHP_CONFIG_FILE_SCAN_DIR] + getenv();
        $proc = proc_open([PHP_BINARY, $script], [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, null, $env);
        $json = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        proc_close($proc);
        unlink($script);
        $stub = json_decode($json, true);
        $this->assertIsArray($stub, "the stub did not load on its own: $err $json");
        $this->assertSame($extension, $stub);
    }

    public function testEveryExtensionClassIsInTheStub(): void
    {
        $declared = array_values(array_filter(get_declared_classes(), fn ($c) => str_starts_with($c, 'AsyncEngine\\')
            && (new \ReflectionClass($c))->getExtensionName() === 'async_engine'));
        sort($declared);
        $expected = self::CLASSES;
        sort($expected);
        $this->assertSame($expected, $declared);
    }
}
