<?php

declare(strict_types=1);

// The demo's page: buttons that defer bursts of tasks, and the engine's
// status page below them. Authorised for everyone: it only listens on
// 127.0.0.1. Task code is in worker.php.

use AsyncEngine\Engine;
use AsyncEngine\StatusPage;

require dirname(__DIR__, 2) . '/php/StatusPage.php';

/** Button value => [label, tasks as [name, args, options]]. */
function bursts(): array
{
    $fast = fn (int $n) => array_map(fn ($i) => ['fast', ['n' => $i], []], range(1, $n));
    $slow = array_map(fn ($i) => ['slow', ['n' => $i, 'ms' => 400 + 150 * $i], []], range(1, 4));
    $failing = array_map(
        fn ($i) => ['failing', ['order' => 1000 + $i], ['max_attempts' => 2]],
        range(1, 3)
    );
    $delayed = array_map(fn ($i) => ['fast', ['n' => $i, 'delayed' => 5], ['delay' => 5]], range(1, 5));
    return [
        'burst' => ['Defer a burst: 20 fast, 4 slow, 3 failing, 5 delayed', [...$fast(20), ...$slow, ...$failing, ...$delayed]],
        'fast' => ['50 fast', $fast(50)],
        'slow' => ['4 slow', $slow],
        'failing' => ['3 failing', $failing],
        'delayed' => ['5 delayed by 5 s', $delayed],
    ];
}

if (($_SERVER['REQUEST_METHOD'] ?? '') === 'POST' && isset($_POST['defer'])) {
    $burst = bursts()[$_POST['defer']] ?? null;
    if ($burst === null) {
        http_response_code(400);
        exit("unknown burst\n");
    }
    foreach ($burst[1] as [$name, $args, $options]) {
        Engine::defer('/worker.php', $name, $args, $options);
    }
    $n = count($burst[1]);
    header('Location: /?' . http_build_query(['msg' => "Deferred $n tasks."]), true, 303);
    exit;
}

$buttons = '';
foreach (bursts() as $value => [$label]) {
    $buttons .= '<button name="defer" value="' . $value . '"' . ($value === 'burst' ? ' class="primary"' : '') . '>'
        . htmlspecialchars($label) . '</button> ';
}
$maxWorkers = (int) ini_get('async_engine.max_workers');
$database = ini_get('async_engine.database') ?: '(not set)';
// The live feed: what tasks publish, pushed by the hub one of the server's
// own PHP workers hosts (async_engine.hub_listen), no polling. It starts from
// the hub's history (lastEventID=earliest): each button reloads the page, and
// a burst's first tasks end before the new page has subscribed.
$hubPort = (int) substr((string) strrchr((string) ini_get('async_engine.hub_listen'), ':'), 1);
$feed = $hubPort === 0 ? '' : <<<HTML
    <section class="demo-feed"><h2>Live feed <small>pushed through the hub on port {$hubPort}</small></h2>
    <ol id="live"></ol></section>
    <script>
    (function () {
      var url = location.protocol + '//' + location.hostname + ':{$hubPort}/.well-known/mercure?topic=demo%2Ftasks&lastEventID=earliest';
      var list = document.getElementById('live');
      new EventSource(url).addEventListener('task', function (e) {
        var item = document.createElement('li');
        item.textContent = new Date().toLocaleTimeString() + '  ' + e.data;
        list.insertBefore(item, list.firstChild);
        while (list.children.length > 8) { list.removeChild(list.lastChild); }
      });
    })();
    </script>
    HTML;
$intro = <<<HTML
    <style>.demo button{font:inherit;padding:.4em .8em;margin:.2em .2em .2em 0}
    .demo .primary{font-weight:600}.demo p{color:#5b6475}
    .demo-feed ol{font:13px ui-monospace,monospace;list-style:none;padding:0;margin:.3em 0;min-height:1.2em}
    .demo-feed small{font-weight:400;color:#5b6475}</style>
    <form method="post" class="demo">$buttons
    <p>Each task is a signed request from this server to <code>/worker.php</code> (at most
    {$maxWorkers} at once). Failing tasks throw, retry once after about a
    second, then stay dead with their error. Database: <code>{$database}</code></p></form>
    $feed
    HTML;

StatusPage::serve(['authorised' => true, 'title' => 'async-engine demo', 'intro' => $intro]);
