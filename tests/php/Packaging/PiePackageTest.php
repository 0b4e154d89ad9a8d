<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Packaging;

use AsyncEngine\Package;
use PHPUnit\Framework\TestCase;
use ZipArchive;

/**
 * bin/package from a clean clone of this repository: the php-ext package
 * builds and installs through exactly what PIE runs (phpize, configure, make,
 * make install), and the pre-packaged binary loads in a PHP that never saw
 * the checkout. cargo's output for these builds is kept in
 * target/package-tests, so later runs rebuild only the two crates.
 */
final class PiePackageTest extends TestCase
{
    private const ROOT = __DIR__ . '/../../..';
    private const ZIP_PATTERN = '/^php_async_engine-(\d+\.\d+\.\d+)_php(\d+\.\d+)-(x86_64|arm64|x86)-(linux)-(glibc|musl)(-debug)?(-zts)?\.zip$/';

    /** bin/package's output, made once for the class. */
    private static string $out;
    private string $tmp;

    public static function setUpBeforeClass(): void
    {
        if (getenv('ASYNC_ENGINE_TEST_PG')) {
            return; // packaging does not depend on the backend: the SQLite pass covers it
        }
        self::$out = sys_get_temp_dir() . '/async-engine-pie-' . bin2hex(random_bytes(4));
        $clone = self::$out . '/clone';
        [$code, $log] = self::command(['git', 'clone', '--quiet', '--no-hardlinks', realpath(self::ROOT), $clone]);
        if ($code !== 0) {
            throw new \RuntimeException("git clone failed:\n$log");
        }
        [$code, $log] = self::command(["$clone/bin/package", self::$out . '/dist'], $clone, self::cargoEnv());
        if ($code !== 0) {
            throw new \RuntimeException("bin/package failed in a clean clone:\n$log");
        }
        // Nothing below may depend on the checkout the package came from.
        self::command(['rm', '-rf', $clone]);
    }

    public static function tearDownAfterClass(): void
    {
        if (isset(self::$out)) {
            self::command(['rm', '-rf', self::$out]);
        }
    }

    protected function setUp(): void
    {
        if (getenv('ASYNC_ENGINE_TEST_PG')) {
            $this->markTestSkipped('packaging does not depend on the backend: the SQLite pass covers it');
        }
        $this->tmp = self::$out . '/' . $this->getName();
        mkdir($this->tmp);
    }

    public function testTheExtPackageIsAValidPhpExtPackageWithWhatPieNeeds(): void
    {
        $ext = self::$out . '/dist/ext';
        // Debian's Composer 2.5 predates the php-ext section (its publish check calls it unknown): the rest is
        // validated strictly, and the php-ext section by the assertions below.
        [$code, $out] = self::command(['composer', 'validate', '--strict', '--no-check-publish', '--no-interaction'], $ext, ['COMPOSER_HOME' => "$this->tmp/.composer"]);
        $this->assertSame(0, $code, $out);
        $json = json_decode((string) file_get_contents("$ext/composer.json"), true);
        $this->assertSame(['async-engine/ext', 'php-ext'], [$json['name'], $json['type']]);
        $this->assertSame('async_engine', $json['php-ext']['extension-name']);
        $this->assertSame(['pre-packaged-binary', 'composer-default'], $json['php-ext']['download-url-method']);
        $this->assertSame([false, true, ['linux']], [$json['php-ext']['support-zts'], $json['php-ext']['support-nts'], $json['php-ext']['os-families']]);
        $this->assertArrayNotHasKey('build-path', $json['php-ext'], 'config.m4 is at the package root');
        foreach (['config.m4', 'Makefile.frag', 'LICENSE', 'README.md', 'rust/Cargo.toml', 'rust/Cargo.lock', 'rust/src/lib.rs', 'rust/core/Cargo.toml', 'rust/core/src/lib.rs', 'stubs/async_engine.stub.php'] as $file) {
            $this->assertFileExists("$ext/$file");
        }
        $this->assertFileEquals(self::ROOT . '/Cargo.lock', "$ext/rust/Cargo.lock");
    }

    public function testPhpizeConfigureMakeInstallBuildsALoadableExtension(): void
    {
        $build = $this->copyExt();
        $root = "$this->tmp/root";
        // make install runs no cargo (PIE may run it through sudo, where the user's cargo is not set up).
        foreach ([['phpize'], ['./configure'], ['make', '-j2'], ['make', 'install', 'ASYNC_ENGINE_CARGO=false']] as $step) {
            [$code, $out] = self::command($step, $build, self::cargoEnv() + ['INSTALL_ROOT' => $root]);
            $this->assertSame(0, $code, implode(' ', $step) . " failed:\n$out");
        }
        $this->assertStringContainsString('Installing shared extensions:', $out);
        $so = $root . trim((string) shell_exec('php-config --extension-dir')) . '/async_engine.so';
        $this->assertFileExists($so);
        $this->assertLoadsAndReports($so);
    }

    public function testThePrePackagedBinaryIsNamedAsPieLooksForItAndLoads(): void
    {
        $zips = glob(self::$out . '/dist/*.zip');
        $this->assertCount(1, $zips);
        $name = basename($zips[0]);
        $this->assertMatchesRegularExpression(self::ZIP_PATTERN, $name);
        preg_match(self::ZIP_PATTERN, $name, $m);
        $this->assertSame(Package::VERSION, $m[1], 'the version in the name is Cargo.toml\'s');
        $this->assertSame(PHP_MAJOR_VERSION . '.' . PHP_MINOR_VERSION, $m[2]);
        $this->assertSame(php_uname('m') === 'aarch64' ? 'arm64' : php_uname('m'), $m[3]);
        $this->assertSame(PHP_ZTS ? '-zts' : '', $m[7] ?? '');

        $zip = new ZipArchive();
        $this->assertTrue($zip->open($zips[0]));
        $this->assertSame(1, $zip->numFiles);
        $this->assertSame('async_engine.so', $zip->getNameIndex(0));
        $this->assertTrue($zip->extractTo($this->tmp));
        $zip->close();
        $so = "$this->tmp/async_engine.so";

        [, $notes] = self::command(['readelf', '-n', $so]);
        $this->assertMatchesRegularExpression('/Build ID: [0-9a-f]{40}/', $notes);
        [, $sections] = self::command(['readelf', '-S', $so]);
        $this->assertStringNotContainsString('.symtab', $sections, 'stripped');
        [, $dynamic] = self::command(['readelf', '-d', $so]);
        $this->assertDoesNotMatchRegularExpression('/RPATH|RUNPATH/', $dynamic, 'no search path into a build tree');
        $this->assertLoadsAndReports($so);
    }

    public function testConfigureWithoutCargoSaysSoAndHowToGetIt(): void
    {
        $build = $this->copyExt();
        $this->assertSame(0, self::command(['phpize'], $build)[0]);
        // A PATH with the C toolchain and PHP but no cargo, and a home without ~/.cargo.
        $env = ['PATH' => '/usr/local/bin:/usr/bin:/bin', 'HOME' => $this->tmp];
        $this->assertNull(self::findOnPath('cargo', $env['PATH']), 'this test needs cargo off /usr/bin');
        [$code, $out] = self::command(['./configure'], $build, $env);
        $this->assertNotSame(0, $code, $out);
        $this->assertStringContainsString("configure: error: cargo, Rust's build tool, was not found on PATH or in ~/.cargo/bin", $out);
        $this->assertStringContainsString('https://rustup.rs', $out);
        $this->assertFileDoesNotExist("$build/Makefile");

        [$code, $out] = self::command(['./configure', "--with-cargo=$this->tmp/no-such-cargo"], $build, $env);
        $this->assertNotSame(0, $code, $out);
        $this->assertStringContainsString("configure: error: --with-cargo=$this->tmp/no-such-cargo: no cargo program there", $out);
    }

    public function testConfigureWithoutLibclangSaysSo(): void
    {
        $build = $this->copyExt();
        $this->assertSame(0, self::command(['phpize'], $build)[0]);
        [$code, $out] = self::command(['./configure'], $build, ['LIBCLANG_PATH' => "$this->tmp/empty"]);
        $this->assertNotSame(0, $code, $out);
        $this->assertStringContainsString('configure: error: libclang was not found', $out);
        $this->assertStringContainsString('install libclang-dev', $out);
    }

    public function testConfigureWithoutSqliteSaysSo(): void
    {
        $build = $this->copyExt();
        $this->assertSame(0, self::command(['phpize'], $build)[0]);
        // autoconf's cache variables stand in for a machine without libsqlite3-dev.
        [$code, $out] = self::command(['./configure'], $build, ['ac_cv_header_sqlite3_h' => 'no']);
        $this->assertNotSame(0, $code, $out);
        $this->assertStringContainsString("configure: error: SQLite's headers (sqlite3.h) were not found: install libsqlite3-dev", $out);
        [$code, $out] = self::command(['./configure'], $build, ['ac_cv_lib_sqlite3_sqlite3_open_v2' => 'no']);
        $this->assertNotSame(0, $code, $out);
        $this->assertStringContainsString("configure: error: SQLite's library (libsqlite3) cannot be linked", $out);
    }

    /** Loads $so in a PHP that reads no ini file and checks what `php --ri` reports. */
    private function assertLoadsAndReports(string $so): void
    {
        [$code, $out] = self::command([PHP_BINARY, '-n', '-d', "extension=$so", '--ri', 'async_engine'], $this->tmp, ['PHP_INI_SCAN_DIR' => '']);
        $this->assertSame(0, $code, $out);
        $this->assertStringContainsString('version => ' . Package::VERSION, $out);
    }

    /** A fresh copy of the generated ext package, as PIE extracts it. */
    private function copyExt(): string
    {
        $build = "$this->tmp/ext";
        $this->assertSame(0, self::command(['cp', '-R', self::$out . '/dist/ext', $build])[0]);
        return $build;
    }

    /** Where these builds keep cargo's output between runs (never the tests' own target/release). */
    private static function cargoEnv(): array
    {
        return ['CARGO_TARGET_DIR' => realpath(self::ROOT) . '/target/package-tests'];
    }

    private static function findOnPath(string $program, string $path): ?string
    {
        foreach (explode(':', $path) as $dir) {
            if (is_executable("$dir/$program")) {
                return "$dir/$program";
            }
        }
        return null;
    }

    /** Runs a command, stderr folded into the output; returns [exit code, output]. */
    private static function command(array $command, ?string $cwd = null, array $env = []): array
    {
        $proc = proc_open($command, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['redirect', 1]], $pipes, $cwd, $env + getenv());
        $out = (string) stream_get_contents($pipes[1]);
        fclose($pipes[1]);
        return [proc_close($proc), $out];
    }
}
