<?php

declare(strict_types=1);

namespace AsyncEngine;

/**
 * This Composer package's version and the async_engine extension versions it
 * works with: the same major.minor series (0.1.x with 0.1.x).
 */
final class Package
{
    /** The package's version; the extension's Cargo.toml carries the same one. */
    public const VERSION = '0.1.0';

    /**
     * Throws when the async_engine extension is missing or from another
     * series than this package; names both versions.
     *
     * @param string|null $loaded the loaded extension's version; by default phpversion('async_engine')
     * @throws IncompatibleExtension
     */
    public static function assertExtension(?string $loaded = null): void
    {
        $loaded ??= phpversion('async_engine') ?: null;
        if ($loaded === null) {
            throw new IncompatibleExtension(sprintf(
                'The async_engine PHP extension is not loaded in this PHP (%s, %s): async-engine/async-engine %s '
                . 'needs it. Install it with bin/install-extension from the package, or add '
                . '"extension=async_engine" to php.ini, and restart php-fpm / Apache.',
                PHP_VERSION,
                PHP_SAPI,
                self::VERSION
            ));
        }
        if (self::series($loaded) !== self::series(self::VERSION)) {
            throw new IncompatibleExtension(sprintf(
                'async-engine/async-engine %s needs the async_engine extension %s.x, but this PHP has '
                . 'async_engine %s loaded: build and install the extension from the same release as the package.',
                self::VERSION,
                self::series(self::VERSION),
                $loaded
            ));
        }
    }

    /** "1.2" of "1.2.3" (major.minor). */
    private static function series(string $version): string
    {
        return implode('.', array_slice(explode('.', $version), 0, 2));
    }
}
