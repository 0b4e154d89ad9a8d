<?php

declare(strict_types=1);

namespace AsyncEngine;

/**
 * The async_engine extension is not loaded, or its version does not match
 * this package's (see Package::assertExtension()).
 */
final class IncompatibleExtension extends \RuntimeException
{
}
