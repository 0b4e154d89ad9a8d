<?php

declare(strict_types=1);

if (!extension_loaded('async_engine')) {
    fwrite(STDERR, "The async_engine extension is not loaded: run the tests through bin/test.\n");
    exit(1);
}

/** The built extension, for child processes the tests start. */
$so = getenv('ASYNC_ENGINE_SO');
if (!$so || !is_file($so)) {
    fwrite(STDERR, "Set ASYNC_ENGINE_SO to the built extension (bin/test does).\n");
    exit(1);
}
define('ASYNC_ENGINE_SO', $so);

// The engine logs dead tasks and failed deliveries through PHP's error log;
// in this CLI process that would be stderr, in the middle of the test output.
define('ASYNC_ENGINE_TEST_ERROR_LOG', sys_get_temp_dir() . '/async-engine-phpunit-' . getmypid() . '.log');
ini_set('error_log', ASYNC_ENGINE_TEST_ERROR_LOG);
register_shutdown_function(static fn () => @unlink(ASYNC_ENGINE_TEST_ERROR_LOG));

require __DIR__ . '/autoload.php';
