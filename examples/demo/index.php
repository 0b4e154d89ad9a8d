<?php

// The demo page: defers tasks and shows what the engine holds.
use AsyncEngine\Engine;

if (($_POST['burst'] ?? '') !== '') {
    $n = max(1, min(100, (int) $_POST['burst']));
    for ($i = 1; $i <= $n; $i++) {
        Engine::defer('/worker.php', $i % 5 === 0 ? 'slow' : 'fast', ['n' => $i], ['delay' => $i % 3 === 0 ? 2 : 0]);
    }
    header('Location: /', true, 303);
    exit;
}
if (isset($_GET['kick'])) {
    Engine::kick();
    header('Location: /', true, 303);
    exit;
}
$stats = Engine::stats();
?>
<!doctype html>
<meta charset="utf-8">
<title>async-engine demo</title>
<style>body{font:15px system-ui;margin:2em auto;max-width:46em} td,th{padding:.2em .8em;text-align:left}</style>
<h1>async-engine demo</h1>
<form method="post"><button name="burst" value="20">Defer 20 tasks</button>
    <a href="/?kick=1">kick()</a></form>
<h2>Engine::stats()</h2>
<table>
<?php foreach ($stats as $key => $value): ?>
    <tr><th><?= htmlspecialchars($key) ?></th><td><?= htmlspecialchars(var_export($value, true)) ?></td></tr>
<?php endforeach ?>
</table>
<p>Database: <code><?= htmlspecialchars(ini_get('async_engine.database') ?: sys_get_temp_dir() . '/async-engine.sqlite') ?></code></p>
