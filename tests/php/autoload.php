<?php

declare(strict_types=1);

/*
 * Autoloads the package's classes and the tests' support code as Composer
 * would from composer.json's "autoload" and "autoload-dev" PSR-4 maps
 * (Packagist is out of reach here, so there is no vendor/autoload.php).
 * PHPUnit's bootstrap, bench/ and tests/chaos/ all load it.
 */

(static function (): void {
    $root = dirname(__DIR__, 2);
    $composer = json_decode((string) file_get_contents("$root/composer.json"), true, 512, JSON_THROW_ON_ERROR);
    $prefixes = ($composer['autoload-dev']['psr-4'] ?? []) + ($composer['autoload']['psr-4'] ?? []);
    // Longest prefix first, so AsyncEngine\Tests\ wins over AsyncEngine\.
    uksort($prefixes, static fn (string $a, string $b): int => strlen($b) <=> strlen($a));
    spl_autoload_register(static function (string $class) use ($root, $prefixes): void {
        foreach ($prefixes as $prefix => $dir) {
            if (str_starts_with($class, $prefix)) {
                $file = "$root/" . rtrim($dir, '/') . '/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
                if (is_file($file)) {
                    require $file;
                }
                return;
            }
        }
    });
})();
