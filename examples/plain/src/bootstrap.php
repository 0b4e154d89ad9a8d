<?php

declare(strict_types=1);

// Shared by the pages and the worker: the package's autoloader, a check that
// the extension matches the package, and the engine's database in var/ (the
// same file for every PHP process of the site, web and CLI alike).
// In production, set async_engine.database in php.ini instead.

use AsyncEngine\Engine;
use AsyncEngine\Package;

require dirname(__DIR__) . '/vendor/autoload.php';

Package::assertExtension();
$var = dirname(__DIR__) . '/var';
if (!is_dir($var)) {
    mkdir($var, 0775, true);
}
Engine::configure(['database' => "$var/engine.sqlite"]);
