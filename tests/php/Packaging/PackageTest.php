<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Packaging;

use AsyncEngine\IncompatibleExtension;
use AsyncEngine\Package;
use PHPUnit\Framework\TestCase;

/**
 * The Composer package: composer.json, the version check between package and
 * extension (by Composer at install time and by the package at run time),
 * and bin/install-extension.
 */
final class PackageTest extends TestCase
{
    private const ROOT = __DIR__ . '/../../..';
    private string $tmp;

    protected function setUp(): void
    {
        $this->tmp = sys_get_temp_dir() . '/async-engine-package-' . bin2hex(random_bytes(4));
        mkdir($this->tmp);
    }

    protected function tearDown(): void
    {
        exec('rm -rf ' . escapeshellarg($this->tmp));
    }

    public function testComposerJsonIsValidStrict(): void
    {
        [$code, $out] = $this->command(['composer', 'validate', '--strict', '--no-interaction'], self::ROOT);
        $this->assertSame(0, $code, $out);
        $json = json_decode((string) file_get_contents(self::ROOT . '/composer.json'), true);
        $this->assertSame('silverstripe-vendormodule', $json['type']);
        $this->assertSame(['AsyncEngine\\' => 'php/'], $json['autoload']['psr-4']);
        $this->assertArrayHasKey('silverstripe/crontask', $json['suggest']);
        $this->assertArrayHasKey('symbiote/silverstripe-queuedjobs', $json['suggest']);
    }

    public function testPackageExtensionAndCrateVersionsAgree(): void
    {
        preg_match('/^version = "([^"]+)"/m', (string) file_get_contents(self::ROOT . '/Cargo.toml'), $m);
        $this->assertSame($m[1], Package::VERSION);
        $this->assertSame(Package::VERSION, phpversion('async_engine'));
        $json = json_decode((string) file_get_contents(self::ROOT . '/composer.json'), true);
        $series = implode('.', array_slice(explode('.', Package::VERSION), 0, 2));
        $this->assertSame("~$series.0", $json['require']['ext-async_engine']);
        // The php-ext package for PIE (packaging/pie, written out by bin/package) provides what the library requires.
        $pie = json_decode((string) file_get_contents(self::ROOT . '/packaging/pie/composer.json'), true);
        $this->assertArrayHasKey('ext-' . $pie['php-ext']['extension-name'], $json['require']);
        $this->assertSame($json['require']['php'], $pie['require']['php']);
        $this->assertSame($json['license'], $pie['license']);
        $this->assertArrayNotHasKey('version', $pie, 'the php-ext package takes its version from the release tag');
        // README names this release's pre-packaged binary.
        $this->assertStringContainsString('php_async_engine-' . Package::VERSION . '_php', (string) file_get_contents(self::ROOT . '/README.md'));
        Package::assertExtension();
        Package::assertExtension($series . '.99');
    }

    public function testAnExtensionOfAnotherSeriesIsNamedWithThePackage(): void
    {
        $this->expectException(IncompatibleExtension::class);
        $this->expectExceptionMessage('async-engine/async-engine ' . Package::VERSION . ' needs the async_engine extension 0.1.x, but this PHP has async_engine 0.2.0 loaded');
        Package::assertExtension('0.2.0');
    }

    public function testAMissingExtensionIsNamed(): void
    {
        $php = 'spl_autoload_register(fn ($c) => require "' . self::ROOT . '/php/" . substr($c, 12) . ".php");'
            . 'try { AsyncEngine\Package::assertExtension(); } catch (AsyncEngine\IncompatibleExtension $e) { echo $e->getMessage(); }';
        [$code, $out] = $this->command([PHP_BINARY, '-n', '-r', $php]);
        $this->assertSame(0, $code, $out);
        $this->assertStringStartsWith('The async_engine PHP extension is not loaded in this PHP', $out);
        $this->assertStringContainsString('bin/install-extension', $out);
    }

    public function testComposerInstallsThePackageOnlyWhereTheExtensionIsLoaded(): void
    {
        file_put_contents("$this->tmp/composer.json", json_encode([
            'name' => 'local/app',
            'require' => ['async-engine/async-engine' => '*@dev'],
            'repositories' => [['type' => 'path', 'url' => realpath(self::ROOT)], ['packagist.org' => false]],
        ]));
        $env = ['COMPOSER_HOME' => "$this->tmp/.composer", 'COMPOSER_DISABLE_NETWORK' => '1', 'COMPOSER_NO_AUDIT' => '1'];
        [$code, $out] = $this->command(['composer', 'install', '--no-interaction', '--no-progress'], $this->tmp,
            $env + ['PHP_INI_SCAN_DIR' => PHP_CONFIG_FILE_SCAN_DIR]);
        $this->assertNotSame(0, $code, 'without the extension: ' . $out);
        $this->assertStringContainsString('requires ext-async_engine', $out);

        [$code, $out] = $this->command(['composer', 'install', '--no-interaction', '--no-progress'], $this->tmp, $env);
        $this->assertSame(0, $code, $out);
        [$code, $out] = $this->command([PHP_BINARY, '-r', 'require "vendor/autoload.php"; AsyncEngine\Package::assertExtension(); echo AsyncEngine\Package::VERSION;'], $this->tmp);
        $this->assertSame([0, Package::VERSION], [$code, $out]);
    }

    public function testInstallExtensionEnablesItForEverySapiAndUninstallRemovesIt(): void
    {
        $extDir = trim((string) shell_exec('php-config --extension-dir'));
        $version = implode('.', array_slice(explode('.', PHP_VERSION), 0, 2));
        $conf = "$this->tmp/etc/php/$version";
        foreach (['cli', 'fpm', 'apache2'] as $sapi) {
            mkdir("$conf/$sapi/conf.d", 0755, true);
        }
        [$code, $out] = $this->command([self::ROOT . '/bin/install-extension'], null, ['DESTDIR' => $this->tmp]);
        $this->assertSame(0, $code, $out);
        $this->assertStringContainsString('enabled for: apache2 cli fpm', $out);
        $this->assertFileEquals(ASYNC_ENGINE_SO, "$this->tmp$extDir/async_engine.so");
        foreach (['cli', 'fpm', 'apache2'] as $sapi) {
            $this->assertSame('../../mods-available/async_engine.ini', readlink("$conf/$sapi/conf.d/30-async_engine.ini"));
        }
        // A PHP reading only the staged configuration loads the staged extension.
        [$code, $out] = $this->command([PHP_BINARY, '-d', "extension_dir=$this->tmp$extDir", '-r', 'echo phpversion("async_engine");'],
            null, ['PHP_INI_SCAN_DIR' => "$conf/cli/conf.d"]);
        $this->assertSame([0, Package::VERSION], [$code, $out]);

        [$code, $out] = $this->command([self::ROOT . '/bin/install-extension', '--uninstall'], null, ['DESTDIR' => $this->tmp]);
        $this->assertSame(0, $code, $out);
        $this->assertSame('', trim((string) shell_exec('find ' . escapeshellarg($this->tmp) . ' -type f -o -type l')));

        [$code, $out] = $this->command([self::ROOT . '/bin/install-extension', '--bogus']);
        $this->assertSame([2, "install-extension: unknown option '--bogus' (use --uninstall or --help)\n"], [$code, $out]);
    }

    /** Runs a command, stderr folded into the output; returns [exit code, output]. */
    private function command(array $command, ?string $cwd = null, array $env = []): array
    {
        $proc = proc_open($command, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['redirect', 1]], $pipes, $cwd, $env + getenv());
        $out = (string) stream_get_contents($pipes[1]);
        fclose($pipes[1]);
        return [proc_close($proc), $out];
    }
}
