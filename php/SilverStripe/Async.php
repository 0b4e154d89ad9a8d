<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe;

use AsyncEngine\Engine;
use AsyncEngine\InvalidTask;
use AsyncEngine\Package;
use AsyncEngine\Task;
use SilverStripe\Control\Director;
use SilverStripe\Core\ClassInfo;
use SilverStripe\Core\Config\Configurable;
use SilverStripe\Core\Environment;

/**
 * The SilverStripe face of the engine: defers AsyncTask classes to the
 * module's endpoint and applies the engine settings from YAML config and
 * the environment.
 *
 * Every setting left null falls back to the environment variable named in
 * its comment, then to php.ini (async_engine.*), then to the default below.
 */
final class Async
{
    use Configurable;

    /** Path of the endpoint that runs tasks, relative to the site's base URL. */
    public const ENDPOINT = '_async/run';

    /**
     * The SQLite database (SS_ASYNC_ENGINE_DATABASE). Default: .async-engine/engine.sqlite
     * in the project (BASE_PATH), created on first use; every PHP user that runs the site
     * (php-fpm, Apache, sake) must be able to write the folder.
     */
    private static ?string $database = null;

    /**
     * Where self-requests go, scheme://host[:port] (SS_ASYNC_ENGINE_BASE_URL). Default in
     * a web request: that request's own server; on the command line: SS_BASE_URL's origin.
     */
    private static ?string $base_url = null;

    /** HMAC key of self-requests (SS_ASYNC_ENGINE_SECRET). Default: generated into the database. */
    private static ?string $secret = null;

    /** Task requests in flight, server-wide (engine default 4). */
    private static ?int $max_workers = null;

    /** Lease seconds before a running task is presumed dead (engine default 300). */
    private static ?int $timeout = null;

    /** Attempts before a task is dead (engine default 5). */
    private static ?int $max_attempts = null;

    /** Seconds done and cancelled tasks are kept (engine default 86400). */
    private static ?int $retention = null;

    /**
     * Where one PHP worker of this server hosts the live-events hub, address:port
     * (SS_ASYNC_ENGINE_HUB_LISTEN). Default: php.ini, else no hub.
     */
    private static ?string $hub_listen = null;

    /** HS256 key of the hub's tokens (SS_ASYNC_ENGINE_HUB_JWT_KEY). Default: derived from the secret. */
    private static ?string $hub_jwt_key = null;

    /**
     * The hub's URL as browsers reach it, e.g. https://example.com/.well-known/mercure
     * behind a proxy (SS_ASYNC_ENGINE_HUB_URL). Default: this request's host on the
     * port of hub_listen.
     */
    private static ?string $hub_url = null;

    /** Seconds one task request keeps running tasks before handing its slot on. */
    private static float $batch_time = 5.0;

    /** Tasks one task request runs at most. */
    private static int $max_tasks = 100;

    private static ?Task $current = null;

    private static bool $configured = false;

    /**
     * Queues `$taskClass` (an AsyncTask) to run with `$args` in a background request;
     * returns the task id. Options as Engine::defer(): delay, at, priority,
     * max_attempts, timeout, unique.
     *
     * @param class-string<AsyncTask> $taskClass
     * @param array<mixed> $args JSON-serialisable values
     * @param array<string, mixed> $options
     * @throws InvalidTask for a class that is not an instantiable AsyncTask, or bad args/options
     */
    public static function defer(string $taskClass, array $args = [], array $options = []): string
    {
        self::configureEngine();
        return Engine::defer(self::endpoint(), self::taskName($taskClass), $args, $options);
    }

    /**
     * Creates or updates (by `$name`; idempotent) a recurring schedule whose
     * occurrences run `$taskClass` (an AsyncTask) with `$args`; returns its
     * record. `$when` and options as Engine::schedule().
     *
     * @param class-string<AsyncTask> $taskClass
     * @param array<mixed> $args JSON-serialisable values
     * @param array<string, mixed> $options
     * @return array<string, mixed>
     * @throws InvalidTask for a bad name, expression, class, args or option
     */
    public static function schedule(string $name, string $when, string $taskClass, array $args = [], array $options = []): array
    {
        self::configureEngine();
        return Engine::schedule($name, $when, self::endpoint(), self::taskName($taskClass), $args, $options);
    }

    /**
     * Publishes an update on the live-events hub; returns its id. As
     * Engine::publish(): options private, type, retry, id.
     *
     * @param string|list<string> $topics
     * @param array<string, mixed> $options
     */
    public static function publish(string|array $topics, string $data, array $options = []): string
    {
        self::configureEngine();
        return Engine::publish($topics, $data, $options);
    }

    /**
     * A token for a site's front-end: lets the browser receive the private
     * updates of `$topics` (topics or URI templates) for `$ttl` seconds;
     * `$payload` is what other subscribers see of it (presence).
     *
     * @param list<string> $topics
     * @param array<string, mixed> $payload
     */
    public static function subscriberToken(array $topics, int $ttl = 3600, array $payload = []): string
    {
        self::configureEngine();
        return Engine::subscriberToken($topics, $ttl, $payload);
    }

    /** The hub's URL for browsers (hub_url), or null when no hub is set up. */
    public static function hubUrl(): ?string
    {
        $url = self::pick('hub_url', 'SS_ASYNC_ENGINE_HUB_URL');
        if ($url !== null) {
            return $url;
        }
        $listen = self::pick('hub_listen', 'SS_ASYNC_ENGINE_HUB_LISTEN') ?? (ini_get('async_engine.hub_listen') ?: null);
        if ($listen === null || !preg_match('/:(\d+)$/', $listen, $m)) {
            return null;
        }
        $base = parse_url(Director::absoluteBaseURL());
        return sprintf('%s://%s:%d/.well-known/mercure', $base['scheme'] ?? 'http', $base['host'] ?? '127.0.0.1', $m[1]);
    }

    /** The hub topic of a record: silverstripe/{sanitised class}/{ID} (App\Note 3: silverstripe/App-Note/3). */
    public static function recordTopic(string $class, int $id): string
    {
        return self::classTopic($class) . '/' . $id;
    }

    /** The hub topic of a class's records: silverstripe/{sanitised class}. */
    public static function classTopic(string $class): string
    {
        return 'silverstripe/' . str_replace('\\', '-', ClassInfo::class_name($class));
    }

    /**
     * Applies the settings to the engine for the rest of this request (once);
     * call it before using AsyncEngine\Engine directly.
     *
     * @throws \AsyncEngine\IncompatibleExtension when the extension is missing or of another version
     */
    public static function configureEngine(): void
    {
        if (self::$configured) {
            return;
        }
        Package::assertExtension();
        Engine::configure(self::settings());
        self::$configured = true;
    }

    /**
     * The engine settings this module applies (keys of Engine::configure()).
     *
     * @return array<string, string|int>
     */
    public static function settings(): array
    {
        $config = self::config();
        $settings = [];
        foreach (['max_workers', 'timeout', 'max_attempts', 'retention'] as $name) {
            if ($config->get($name) !== null) {
                $settings[$name] = (int) $config->get($name);
            }
        }
        $database = self::pick('database', 'SS_ASYNC_ENGINE_DATABASE') ?? self::defaultDatabase();
        if ($database !== null) {
            $settings['database'] = $database;
        }
        $secret = self::pick('secret', 'SS_ASYNC_ENGINE_SECRET');
        if ($secret !== null) {
            $settings['secret'] = $secret;
        }
        foreach (['hub_listen' => 'SS_ASYNC_ENGINE_HUB_LISTEN', 'hub_jwt_key' => 'SS_ASYNC_ENGINE_HUB_JWT_KEY'] as $name => $env) {
            $value = self::pick($name, $env);
            if ($value !== null) {
                $settings[$name] = $value;
            }
        }
        $baseUrl = self::pick('base_url', 'SS_ASYNC_ENGINE_BASE_URL') ?? self::cliBaseUrl();
        if ($baseUrl !== null) {
            $settings['base_url'] = $baseUrl;
        }
        return $settings;
    }

    /** The endpoint path tasks are deferred to: the site's base path plus ENDPOINT. */
    public static function endpoint(): string
    {
        return rtrim(Director::baseURL(), '/') . '/' . self::ENDPOINT;
    }

    /** The engine task running in this request, while an AsyncTask processes it (e.g. to extend() its lease). */
    public static function currentTask(): ?Task
    {
        return self::$current;
    }

    /** @internal Set by TaskRunner around each task. */
    public static function setCurrentTask(?Task $task): void
    {
        self::$current = $task;
    }

    /**
     * The canonical name of an instantiable AsyncTask class.
     *
     * @throws InvalidTask
     */
    public static function taskName(string $taskClass): string
    {
        if (!class_exists($taskClass)) {
            throw new InvalidTask("Async::defer(): no class named \"$taskClass\"");
        }
        $reflection = new \ReflectionClass($taskClass);
        if (!$reflection->implementsInterface(AsyncTask::class) || !$reflection->isInstantiable()) {
            throw new InvalidTask(sprintf(
                'Async::defer(): %s is not an instantiable class implementing %s',
                $reflection->getName(),
                AsyncTask::class
            ));
        }
        return ClassInfo::class_name($reflection->getName());
    }

    /** A YAML setting, else an environment variable, else null (php.ini or the engine default). */
    private static function pick(string $name, string $env): ?string
    {
        $value = self::config()->get($name);
        if ($value === null || $value === '') {
            $value = Environment::getEnv($env);
        }
        return $value === null || $value === '' || $value === false ? null : (string) $value;
    }

    /** The project-local database, unless php.ini names one. */
    private static function defaultDatabase(): ?string
    {
        if (ini_get('async_engine.database') !== '') {
            return null;
        }
        $dir = BASE_PATH . '/.async-engine';
        if (!is_dir($dir)) {
            @mkdir($dir, 0775, true);
        }
        return $dir . '/engine.sqlite';
    }

    /** On the command line without an ini base URL: the origin of SS_BASE_URL. */
    private static function cliBaseUrl(): ?string
    {
        if (!Director::is_cli() || ini_get('async_engine.base_url') !== '') {
            return null;
        }
        $url = (string) Environment::getEnv('SS_BASE_URL');
        $parts = parse_url($url);
        if (!isset($parts['scheme'], $parts['host'])) {
            return null;
        }
        return $parts['scheme'] . '://' . $parts['host'] . (isset($parts['port']) ? ':' . $parts['port'] : '');
    }
}
