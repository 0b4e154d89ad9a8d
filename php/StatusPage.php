<?php

declare(strict_types=1);

namespace AsyncEngine;

/**
 * The engine's live status page: tasks by state, slots in flight, next due
 * time, tasks finished over the last minutes, recent tasks and dead tasks.
 * Plain PHP, one class, no build step and nothing loaded from elsewhere.
 *
 * GET renders the page (`?format=json` the same data for monitoring,
 * `?format=fragment` the part the page reloads every REFRESH_MS); POST
 * `action=retry|cancel` and `id` acts on a task, only when authorised and,
 * when the page was given a CSRF token, only with it. Task arguments are
 * shown only when authorised. Every answer forbids framing.
 */
final class StatusPage
{
    /** Seconds of history in the chart. */
    public const HISTORY_SECONDS = 300;

    /** Seconds per bar of the chart. */
    public const HISTORY_BUCKET = 5;

    /** How many recent tasks are listed. */
    public const RECENT = 15;

    /** How many dead tasks are listed. */
    public const DEAD = 50;

    /** Milliseconds between the page's refreshes. */
    public const REFRESH_MS = 1500;

    private const STATES = ['queued', 'running', 'done', 'dead', 'cancelled'];

    /** Name of the cookie that authorises a viewer who gave the token once. */
    public const SESSION_COOKIE = 'async_engine_status';

    /** Name of the cookie holding the CSRF token the action forms repeat. */
    public const CSRF_COOKIE = 'async_engine_csrf';

    /** Headers of every answer: never cached, never framed (clickjacking). */
    private const COMMON = ['Cache-Control' => 'no-store', 'X-Frame-Options' => 'DENY',
        'Content-Security-Policy' => "frame-ancestors 'none'", 'X-Content-Type-Options' => 'nosniff',
        'Referrer-Policy' => 'no-referrer'];

    private const TEXT = ['Content-Type' => 'text/plain; charset=utf-8'] + self::COMMON;

    private const HTML = ['Content-Type' => 'text/html; charset=utf-8'] + self::COMMON;

    private const JSON = ['Content-Type' => 'application/json'] + self::COMMON;

    /**
     * @param bool $authorised may the viewer see arguments, retry and cancel
     * @param array<string, string> $formFields hidden fields every action form carries
     *        (a token, a CSRF token)
     * @param string $title the page's title
     * @param string $intro HTML shown above the status (trusted, not escaped)
     * @param ?string $csrf when set, a POST acts only if its `csrf` field equals it
     *        (serve() sets it; a framework that checks its own CSRF token, as
     *        SilverStripe's SecurityID, passes that token in $formFields instead)
     */
    public function __construct(
        private bool $authorised = false,
        private array $formFields = [],
        private string $title = 'async-engine status',
        private string $intro = '',
        private ?string $csrf = null
    ) {
    }

    /**
     * Answers the current request from PHP's globals and sends the response.
     *
     * Options: `token` (a secret: a viewer who gives it once, as `?token=` or
     * form field `token`, gets an HttpOnly, SameSite=Strict cookie and is
     * sent back to the page without it, so it stays out of URLs and access
     * logs), `authorised` (true authorises everyone: only for a page that is
     * already protected), `title`, `intro` (HTML). Without either the page is
     * read-only. A `token` option that is given but empty (an unset
     * environment variable) refuses to serve rather than open the page.
     * Every action form carries a CSRF token (a cookie it must match).
     *
     * @param array{token?: mixed, authorised?: bool, title?: string, intro?: string} $options
     */
    public static function serve(array $options = []): void
    {
        [$status, $headers, $body] = self::answer($options, $_SERVER, $_GET, $_POST, $_COOKIE);
        http_response_code($status);
        foreach ($headers as $name => $value) {
            foreach ((array) $value as $one) {
                header("$name: $one", false);
            }
        }
        echo $body;
    }

    /**
     * What serve() answers, from the request's parts (testable without globals).
     *
     * @param array<string, mixed> $options as serve() takes them
     * @param array<string, mixed> $server $_SERVER
     * @param array<string, mixed> $query $_GET
     * @param array<string, mixed> $post $_POST
     * @param array<string, mixed> $cookies $_COOKIE
     * @return array{int, array<string, string|list<string>>, string} status, headers, body
     */
    public static function answer(array $options, array $server, array $query, array $post, array $cookies): array
    {
        $secure = !empty($server['HTTPS']) && $server['HTTPS'] !== 'off';
        $path = strtok((string) ($server['REQUEST_URI'] ?? '/'), '?') ?: '/';
        $cookie = static fn (string $name, string $value): string => sprintf(
            '%s=%s; Path=%s; HttpOnly; SameSite=Strict%s',
            $name,
            rawurlencode($value),
            $path,
            $secure ? '; Secure' : ''
        );
        $session = null;
        if (array_key_exists('token', $options)) {
            $token = $options['token'];
            if (!is_string($token) || strlen($token) < 16) {
                return [500, self::TEXT, "The status page is misconfigured: its token is empty or shorter than 16 "
                    . "characters (is the environment variable that holds it set?). Refusing to serve.\n"];
            }
            $session = hash_hmac('sha256', 'async-engine status session', $token);
            $given = $post['token'] ?? $query['token'] ?? null;
            if ($given !== null) {
                if (!is_string($given) || !hash_equals($token, $given)) {
                    return [403, self::TEXT, "Wrong token.\n"];
                }
                // Exchanged once for a cookie; the URL goes back without it.
                $back = http_build_query(array_diff_key($query, ['token' => 1]));
                return [303, self::TEXT + ['Location' => $path . ($back === '' ? '' : "?$back"),
                    'Set-Cookie' => $cookie(self::SESSION_COOKIE, $session)], "Signed in.\n"];
            }
        }
        $fromCookie = $cookies[self::SESSION_COOKIE] ?? null;
        $authorised = ($options['authorised'] ?? false) === true
            || ($session !== null && is_string($fromCookie) && hash_equals($session, $fromCookie));
        $headers = [];
        $csrf = $cookies[self::CSRF_COOKIE] ?? null;
        if ($authorised && (!is_string($csrf) || !preg_match('/^[0-9a-f]{64}$/', $csrf))) {
            $csrf = bin2hex(random_bytes(32));
            $headers['Set-Cookie'] = $cookie(self::CSRF_COOKIE, $csrf);
        }
        $page = new self(
            $authorised,
            $authorised ? ['csrf' => $csrf] : [],
            (string) ($options['title'] ?? 'async-engine status'),
            (string) ($options['intro'] ?? ''),
            $authorised ? $csrf : null
        );
        [$status, $own, $body] = $page->handle((string) ($server['REQUEST_METHOD'] ?? 'GET'), $query, $post);
        return [$status, $own + $headers, $body];
    }

    /**
     * Answers one request.
     *
     * @param array<string, mixed> $query the query string's values
     * @param array<string, mixed> $post the POST body's values
     * @return array{int, array<string, string>, string} status, headers, body
     */
    public function handle(string $method, array $query, array $post): array
    {
        $format = $query['format'] ?? 'html';
        if (!in_array($format, ['html', 'json', 'fragment'], true)) {
            return [400, self::TEXT, "format must be html, json or fragment\n"];
        }
        if ($method === 'POST') {
            return $this->act($post, $query, $format === 'json');
        }
        if ($method !== 'GET' && $method !== 'HEAD') {
            return [405, self::TEXT + ['Allow' => 'GET, POST'], "Method not allowed\n"];
        }
        $data = $this->data();
        if ($format === 'json') {
            return [200, self::JSON, self::json($data)];
        }
        if ($format === 'fragment') {
            return [200, self::HTML, $this->fragment($data)];
        }
        $message = is_string($query['msg'] ?? null) ? $query['msg'] : '';
        return [200, self::HTML, $this->page($data, $message)];
    }

    /**
     * Everything the page shows, as the JSON form gives it. Times are Unix
     * seconds; durations seconds.
     *
     * @return array<string, mixed>
     */
    public function data(): array
    {
        $now = microtime(true);
        $recent = [];
        foreach (self::STATES as $state) {
            array_push($recent, ...Engine::tasks($state, self::RECENT));
        }
        usort($recent, fn (array $a, array $b): int => $b['updated_at'] <=> $a['updated_at']);
        return [
            'time' => $now,
            'authorised' => $this->authorised,
            'stats' => Engine::stats(),
            'history' => [
                'seconds' => self::HISTORY_SECONDS,
                'bucket' => self::HISTORY_BUCKET,
                'intervals' => Engine::history(self::HISTORY_SECONDS, self::HISTORY_BUCKET),
            ],
            'recent' => array_map(
                fn (array $t): array => $this->summary($t, $now),
                array_slice($recent, 0, self::RECENT)
            ),
            'dead' => array_map(
                fn (array $t): array => $this->summary($t, $now),
                Engine::tasks('dead', self::DEAD)
            ),
            'schedules' => array_map(fn (array $s): array => array_intersect_key($s, array_flip([
                'name', 'when', 'timezone', 'endpoint', 'task', 'catch_up', 'overlap', 'next_at',
                'last_run_at', 'last_state', 'last_error', 'runs', 'skipped',
            ])) + ($this->authorised ? ['args' => $s['args']] : []), Engine::schedules()),
        ];
    }

    /**
     * @param array<string, mixed> $post
     * @param array<string, mixed> $query
     * @return array{int, array<string, string>, string}
     */
    private function act(array $post, array $query, bool $json): array
    {
        if (!$this->authorised) {
            return [403, self::TEXT, "The status page is read-only: retry and cancel need authorisation.\n"];
        }
        $csrf = $post['csrf'] ?? null;
        if ($this->csrf !== null && (!is_string($csrf) || !hash_equals($this->csrf, $csrf))) {
            return [403, self::TEXT, "The form's CSRF token is missing or wrong: reload the page and try again.\n"];
        }
        $action = $post['action'] ?? null;
        $id = $post['id'] ?? null;
        if (!is_string($id) || $id === '') {
            return [400, self::TEXT, "id is missing\n"];
        }
        $message = match ($action) {
            'retry' => Engine::retry($id)
                ? "Task $id requeued."
                : "Task $id is not dead: nothing retried.",
            'cancel' => Engine::cancel($id)
                ? "Task $id cancelled."
                : "Task $id is neither queued nor dead: nothing cancelled.",
            default => null,
        };
        if ($message === null) {
            return [400, self::TEXT, "action must be retry or cancel\n"];
        }
        if ($json) {
            return [200, self::JSON, self::json(['message' => $message])];
        }
        $back = array_diff_key($query, ['format' => 1, 'msg' => 1, 'token' => 1]) + ['msg' => $message];
        return [303, self::TEXT + ['Location' => '?' . http_build_query($back)], "$message\n"];
    }

    /**
     * @param array<string, mixed> $t a task record
     * @return array<string, mixed>
     */
    private function summary(array $t, float $now): array
    {
        $active = in_array($t['state'], ['running', 'done', 'dead'], true) && $t['started_at'] !== null;
        $summary = [
            'id' => $t['id'],
            'endpoint' => $t['endpoint'],
            'task' => $t['task'],
            'state' => $t['state'],
            'attempt' => $t['attempt'],
            'max_attempts' => $t['max_attempts'],
            'created_at' => $t['created_at'],
            'due_at' => $t['due_at'],
            'started_at' => $t['started_at'],
            'finished_at' => $t['finished_at'],
            'duration' => $active ? max(0.0, ($t['finished_at'] ?? $now) - $t['started_at']) : null,
            'last_error' => $t['last_error'],
        ];
        if ($this->authorised) {
            $summary['args'] = $t['args'];
        }
        return $summary;
    }

    /** @param array<string, mixed> $data */
    private function page(array $data, string $message): string
    {
        $e = self::escape(...);
        $refresh = self::REFRESH_MS;
        $notice = $message === '' ? '' : "<p class=\"ae-msg\" role=\"status\">{$e($message)}</p>";
        return <<<HTML
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <meta name="robots" content="noindex">
            <title>{$e($this->title)}</title>
            <style>{$this->css()}</style>
            </head>
            <body>
            <h1>{$e($this->title)}</h1>
            {$this->intro}
            {$notice}
            {$this->fragment($data)}
            <script>
            (function () {
                var url = new URL(location.href);
                url.searchParams.set('format', 'fragment');
                url.searchParams.delete('msg');
                function refresh() {
                    fetch(url, {cache: 'no-store', credentials: 'same-origin'}).then(function (r) {
                        if (!r.ok) { throw new Error(r.status); }
                        return r.text();
                    }).then(function (html) {
                        var next = document.createElement('template');
                        next.innerHTML = html.trim();
                        document.getElementById('ae-status').replaceWith(next.content.firstElementChild);
                        document.body.classList.remove('ae-stale');
                    }).catch(function () {
                        document.body.classList.add('ae-stale');
                    }).finally(function () {
                        setTimeout(refresh, {$refresh});
                    });
                }
                setTimeout(refresh, {$refresh});
            })();
            </script>
            </body>
            </html>
            HTML;
    }

    /** @param array<string, mixed> $data */
    private function fragment(array $data): string
    {
        $e = self::escape(...);
        $stats = $data['stats'];
        $now = $data['time'];
        $cards = '';
        foreach (self::STATES as $state) {
            $cards .= "<div class=\"ae-card ae-$state\"><b data-count=\"$state\">{$stats[$state]}</b>"
                . "<span>$state</span></div>";
        }
        $busy = min(100, (int) round(100 * $stats['in_flight'] / max(1, $stats['max_workers'])));
        $cards .= "<div class=\"ae-card\"><b data-count=\"in_flight\">{$stats['in_flight']}</b>"
            . "<span>of {$stats['max_workers']} workers busy</span>"
            . "<i class=\"ae-meter\"><i style=\"width:$busy%\"></i></i></div>";
        $next = match (true) {
            $stats['next_due'] === null => 'nothing queued',
            $stats['oldest_due_age'] !== null => 'now (waiting ' . self::duration($stats['oldest_due_age']) . ')',
            default => 'in ' . self::duration($stats['next_due'] - $now),
        };
        $cards .= "<div class=\"ae-card\"><b class=\"ae-small\">{$e($next)}</b><span>next due</span></div>";
        $deadCount = count($data['dead']);
        $deadShown = $stats['dead'] > $deadCount ? " (newest $deadCount of {$stats['dead']})" : '';
        $mode = $this->authorised ? 'authorised' : 'read-only';
        $updated = date('H:i:s', (int) $now);
        $failing = $this->failing($stats['failing_endpoints'] ?? [], $now) . $this->hub($stats['hub'] ?? null);
        return <<<HTML
            <main id="ae-status">
            <section class="ae-cards">$cards</section>
            $failing
            <section><h2>Finished tasks, last {$this->minutes()} minutes</h2>{$this->chart($data['history'])}</section>
            {$this->schedules($data['schedules'], $now)}
            <section><h2>Dead tasks{$deadShown}</h2>{$this->table($data['dead'], $now, true)}</section>
            <section><h2>Recent tasks</h2>{$this->table($data['recent'], $now, false)}</section>
            <footer>Updated $updated · $mode · refreshes every {$this->refreshSeconds()} s ·
            <a href="?{$e($this->query(['format' => 'json']))}">JSON</a></footer>
            </main>
            HTML;
    }

    /**
     * Endpoints whose deliveries fail (a wrong base URL, a redirect): their
     * tasks wait, with their attempts untouched, until a delivery gets through.
     *
     * @param list<array{endpoint: string, failures: int, last_error: string, retry_at: float}> $failing
     */
    private function failing(array $failing, float $now): string
    {
        if ($failing === []) {
            return '';
        }
        $e = self::escape(...);
        $rows = '';
        foreach ($failing as $f) {
            $rows .= "<tr data-failing=\"{$e($f['endpoint'])}\"><td>{$e($f['endpoint'])}</td><td>{$f['failures']}</td>"
                . '<td>in ' . $e(self::duration(max(0, $f['retry_at'] - $now))) . "</td><td>{$e($f['last_error'])}</td></tr>";
        }
        return '<section class="ae-failing"><h2>Deliveries failing</h2><p>Requests to these endpoints do not reach '
            . '<code>accept()</code>; their tasks stay queued with their attempts untouched, and delivery is tried again '
            . 'with growing delays. Check <code>async_engine.base_url</code>.</p><table><thead><tr><th>endpoint</th>'
            . "<th>failures in a row</th><th>next try</th><th>last error</th></tr></thead><tbody>$rows</tbody></table></section>";
    }

    /**
     * The live-events hub, when hub_listen is set: who hosts it, or a warning
     * that no worker does (none has served a request yet, or the port is taken),
     * with why a worker last failed to start it.
     *
     * @param array{listen: string, host_pid: ?int, listen_error: ?string, subscriptions: int, updates_kept: int}|null $hub
     */
    private function hub(?array $hub): string
    {
        if ($hub === null) {
            return '';
        }
        $e = self::escape(...);
        $state = $hub['host_pid'] === null
            ? '<b class="ae-dead">no worker hosts it</b> (none has served a request since it started, or none could '
                . 'start it)'
            : "hosted by worker pid {$hub['host_pid']}";
        $error = $hub['listen_error'] === null ? ''
            : "<p class=\"ae-dead\" data-hub-error>{$e($hub['listen_error'])}</p>";
        return "<section class=\"ae-hub\"><h2>Live events hub</h2><p data-hub=\"{$e($hub['listen'])}\">"
            . "<code>{$e($hub['listen'])}</code>: $state · {$hub['subscriptions']} subscriptions · "
            . "{$hub['updates_kept']} updates kept</p>$error</section>";
    }

    /**
     * Recurring schedules with their next and last runs.
     *
     * @param list<array<string, mixed>> $schedules
     */
    private function schedules(array $schedules, float $now): string
    {
        if ($schedules === []) {
            return '';
        }
        $e = self::escape(...);
        $rows = '';
        foreach ($schedules as $s) {
            $next = $s['next_at'] === null ? 'never' : 'in ' . self::duration(max(0, $s['next_at'] - $now));
            $last = $s['last_run_at'] === null ? '—' : self::duration(max(0, $now - $s['last_run_at'])) . ' ago';
            $state = $s['last_state'] ?? '—';
            $rows .= "<tr data-schedule=\"{$e($s['name'])}\"><td>{$e($s['name'])}</td><td><code>{$e($s['when'])}</code>"
                . " {$e($s['timezone'])}</td><td>{$e($s['endpoint'])} {$e($s['task'])}</td><td>{$e($next)}</td>"
                . "<td>{$e($last)}</td><td class=\"ae-{$e($state)}\">{$e($state)}</td><td>{$s['runs']}</td><td>{$s['skipped']}</td>"
                . "<td>{$e($s['last_error'] ?? '')}</td></tr>";
        }
        return '<section class="ae-schedules"><h2>Schedules</h2><table><thead><tr><th>name</th><th>when</th>'
            . '<th>runs task</th><th>next</th><th>last run</th><th>last state</th><th>runs</th><th>skipped</th>'
            . "<th>last error</th></tr></thead><tbody>$rows</tbody></table></section>";
    }

    /** @param array<string, mixed> $history */
    private function chart(array $history): string
    {
        $rows = $history['intervals'];
        $width = 600;
        $height = 120;
        $max = max(1, 0, ...array_map(fn (array $r): int => $r['done'] + $r['dead'], $rows));
        $bar = $width / max(1, count($rows));
        $w = round(max(1, $bar - 1), 2);
        $bars = '';
        foreach ($rows as $i => $r) {
            if ($r['done'] + $r['dead'] === 0) {
                continue;
            }
            $x = round($i * $bar, 2);
            $hDone = round($height * $r['done'] / $max, 2);
            $hDead = round($height * $r['dead'] / $max, 2);
            $label = date('H:i:s', (int) $r['at']) . ": {$r['done']} done, {$r['dead']} dead";
            $bars .= "<g><title>$label</title>"
                . "<rect class=\"ae-bar-done\" x=\"$x\" y=\"" . ($height - $hDone) . "\" width=\"$w\" height=\"$hDone\"/>"
                . "<rect class=\"ae-bar-dead\" x=\"$x\" y=\"" . ($height - $hDone - $hDead) . "\" width=\"$w\""
                . " height=\"$hDead\"/></g>";
        }
        $done = array_sum(array_column($rows, 'done'));
        $dead = array_sum(array_column($rows, 'dead'));
        $lastMinute = array_slice($rows, -intdiv(60, $history['bucket']));
        $rate = array_sum(array_column($lastMinute, 'done')) / 60;
        $bucket = $history['bucket'];
        return <<<HTML
            <svg class="ae-chart" viewBox="0 0 $width $height" preserveAspectRatio="none" role="img"
                aria-label="Tasks finished per $bucket s">$bars</svg>
            <p class="ae-legend"><span class="ae-key ae-bar-done"></span> <b data-total="done">$done</b> done
            <span class="ae-key ae-bar-dead"></span> <b data-total="dead">$dead</b> dead ·
            {$this->rate($rate)} done/s over the last minute · highest bar $max per $bucket s</p>
            HTML;
    }

    /** @param list<array<string, mixed>> $tasks */
    private function table(array $tasks, float $now, bool $deadList): string
    {
        if ($tasks === []) {
            return '<p class="ae-empty">None.</p>';
        }
        $e = self::escape(...);
        $args = $this->authorised ? '<th>args</th>' : '';
        $actions = $this->authorised ? '<th></th>' : '';
        $rows = '';
        foreach ($tasks as $t) {
            $when = match ($t['state']) {
                'queued' => $t['due_at'] > $now ? 'due in ' . self::duration($t['due_at'] - $now) : 'due',
                'running' => 'started ' . self::duration($now - $t['started_at']) . ' ago',
                default => self::duration($now - $t['finished_at']) . ' ago',
            };
            $rows .= "<tr data-id=\"{$e($t['id'])}\" data-state=\"{$e($t['state'])}\">"
                . "<td><code title=\"{$e($t['id'])}\">{$e(substr($t['id'], -8))}</code></td>"
                . "<td>{$e($t['task'])}<small>{$e($t['endpoint'])}</small></td>"
                . "<td><span class=\"ae-state ae-{$e($t['state'])}\">{$e($t['state'])}</span></td>"
                . "<td>{$t['attempt']}/{$t['max_attempts']}</td>"
                . '<td>' . ($t['duration'] === null ? '' : self::duration($t['duration'])) . '</td>'
                . "<td>{$e($when)}</td>"
                . "<td class=\"ae-error\">{$e((string) $t['last_error'])}</td>"
                . ($this->authorised ? "<td><code>{$e(self::clip(json_encode($t['args'], JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE), 120))}</code></td>" : '')
                . ($this->authorised ? '<td>' . $this->buttons($t, $deadList) . '</td>' : '')
                . '</tr>';
        }
        $class = $deadList ? 'ae-tasks ae-dead-list' : 'ae-tasks';
        return "<table class=\"$class\"><thead><tr><th>id</th><th>task</th><th>state</th><th>attempts</th>"
            . "<th>took</th><th>when</th><th>last error</th>$args$actions</tr></thead><tbody>$rows</tbody></table>";
    }

    /**
     * Forms for what may be done to the task: retry or cancel a dead one (in
     * the dead list), cancel a queued one.
     *
     * @param array<string, mixed> $t
     */
    private function buttons(array $t, bool $deadList): string
    {
        $actions = match (true) {
            $deadList => ['retry' => 'Retry', 'cancel' => 'Cancel'],
            $t['state'] === 'queued' => ['cancel' => 'Cancel'],
            default => [],
        };
        $e = self::escape(...);
        $hidden = '';
        foreach ($this->formFields + ['id' => $t['id']] as $name => $value) {
            $hidden .= "<input type=\"hidden\" name=\"{$e($name)}\" value=\"{$e($value)}\">";
        }
        $html = '';
        foreach ($actions as $action => $label) {
            $html .= "<form method=\"post\" class=\"ae-action\">$hidden"
                . "<button name=\"action\" value=\"$action\">$label</button></form>";
        }
        return $html;
    }

    /** @param array<string, string> $set */
    private function query(array $set): string
    {
        return http_build_query($set);
    }

    private function minutes(): string
    {
        return self::rate(self::HISTORY_SECONDS / 60);
    }

    private function refreshSeconds(): string
    {
        return self::rate(self::REFRESH_MS / 1000);
    }

    private static function rate(float $n): string
    {
        return rtrim(rtrim(number_format($n, 1, '.', ''), '0'), '.');
    }

    /** A duration in seconds, readable. */
    private static function duration(float $s): string
    {
        $s = max(0.0, $s);
        return match (true) {
            $s < 1 => round($s * 1000) . ' ms',
            $s < 60 => self::rate($s) . ' s',
            $s < 3600 => floor($s / 60) . ' min ' . ((int) $s % 60) . ' s',
            $s < 86400 => floor($s / 3600) . ' h ' . floor(fmod($s, 3600) / 60) . ' min',
            default => floor($s / 86400) . ' d',
        };
    }

    private static function clip(string $s, int $max): string
    {
        return strlen($s) > $max ? mb_strcut($s, 0, $max) . '…' : $s;
    }

    private static function escape(mixed $s): string
    {
        return htmlspecialchars((string) $s, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
    }

    /**
     * Times stay floats in JSON even on a whole second (a reader's types
     * do not change with the clock).
     *
     * @param array<string, mixed> $data
     */
    private static function json(array $data): string
    {
        return json_encode(
            $data,
            JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PRESERVE_ZERO_FRACTION
                | JSON_THROW_ON_ERROR
        ) . "\n";
    }

    private function css(): string
    {
        return <<<'CSS'
            body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:70em;padding:0 1em;color:#1d2330}
            h1{font-size:1.4em;margin:0 0 .6em}h2{font-size:1.05em;margin:1.4em 0 .5em}
            .ae-stale main{opacity:.55}.ae-msg{background:#eef5ff;border:1px solid #b7d0f5;padding:.5em .8em}
            .ae-cards{display:flex;flex-wrap:wrap;gap:.6em}
            .ae-card{border:1px solid #d8dde6;border-radius:6px;padding:.5em .9em;min-width:6em;background:#fafbfc}
            .ae-card b{display:block;font-size:1.6em}.ae-card b.ae-small{font-size:1.05em;padding:.35em 0}
            .ae-card span{color:#5b6475}.ae-done b{color:#217a3c}.ae-dead b{color:#b3261e}.ae-running b{color:#1d5bbf}
            .ae-meter{display:block;height:5px;background:#e4e7ec;border-radius:3px;margin-top:.3em}
            .ae-meter i{display:block;height:5px;background:#1d5bbf;border-radius:3px}
            .ae-chart{width:100%;height:120px;background:#fafbfc;border:1px solid #d8dde6}
            .ae-bar-done{fill:#3c9a5a;background:#3c9a5a}.ae-bar-dead{fill:#d0443a;background:#d0443a}
            .ae-key{display:inline-block;width:.8em;height:.8em}.ae-legend{color:#5b6475}
            .ae-tasks{border-collapse:collapse;width:100%}.ae-tasks th,.ae-tasks td{text-align:left;
            padding:.3em .6em;border-bottom:1px solid #e4e7ec;vertical-align:top;white-space:nowrap}
            .ae-tasks small{display:block;color:#8a93a3}.ae-tasks .ae-error{color:#b3261e;min-width:16em;white-space:normal;overflow-wrap:anywhere}
            .ae-state{border-radius:3px;padding:0 .4em;background:#e4e7ec}.ae-state.ae-done{background:#d7f0de}
            .ae-state.ae-dead{background:#f8d8d5}.ae-state.ae-running{background:#d9e6fb}
            .ae-action{display:inline}.ae-action button{margin-right:.3em}
            .ae-empty{color:#8a93a3}footer{margin-top:1.5em;color:#8a93a3}
            CSS;
    }
}
