<?php

declare(strict_types=1);

// The chaos harness: runs thousands of tasks through nginx + php-fpm and
// php -S while it injects faults, then accounts for every task. See
// docs/reliability.md. Run it through tests/chaos/run.
//   --short (default) | --long     counts and durations (CI runs --short)
//   --only=<name>[,<name>]         run only these scenarios
//   --write=<file>                 put the report between the markers of <file>
//   --keep                         keep each run's directory

namespace AsyncEngine\Chaos;

$root = dirname(__DIR__, 2);
require "$root/tests/php/autoload.php";
require __DIR__ . '/lib/Workload.php';
require __DIR__ . '/lib/Pg.php';
require __DIR__ . '/lib/Lab.php';
require __DIR__ . '/lib/Faults.php';
require __DIR__ . '/lib/Scenario.php';
require __DIR__ . '/lib/Hostile.php';

$options = getopt('', ['short', 'long', 'only:', 'write:', 'keep']);
$long = isset($options['long']);
$only = isset($options['only']) ? explode(',', $options['only']) : null;

$scenarios = Scenario::all($long);
$hostile = Hostile::all($long);
$names = array_merge(array_keys($scenarios), array_keys($hostile));
foreach ($only ?? [] as $name) {
    if (!in_array($name, $names, true)) {
        fwrite(STDERR, "unknown scenario '$name'; known: " . implode(', ', $names) . "\n");
        exit(2);
    }
}
$keep = isset($options['keep']);
$started = microtime(true);
$rows = $checks = [];
$failed = false;
foreach ($scenarios as $name => $scenario) {
    if ($only === null || in_array($name, $only, true)) {
        $row = $scenario->run($name, $keep);
        $rows[] = $row;
        $failed = $failed || !$row['ok'];
    }
}
foreach ($hostile as $name => $check) {
    if ($only === null || in_array($name, $only, true)) {
        $result = $check($keep);
        $checks[] = ['name' => $name] + $result;
        $failed = $failed || !$result['ok'];
        printf("%-24s %s  %s\n", $name, $result['ok'] ? 'ok  ' : 'FAIL', $result['summary']);
    }
}
$report = Scenario::report($rows, $checks, $long, microtime(true) - $started);
echo "\n$report";
if (isset($options['write'])) {
    $file = $options['write'];
    $text = (string) file_get_contents($file);
    $updated = preg_replace('/(<!-- chaos:start -->\n).*(<!-- chaos:end -->)/s', "\$1$report\$2", $text, 1, $count);
    if ($count !== 1) {
        fwrite(STDERR, "$file has no <!-- chaos:start --> ... <!-- chaos:end --> markers\n");
        exit(1);
    }
    file_put_contents($file, $updated);
}
exit($failed ? 1 : 0);
