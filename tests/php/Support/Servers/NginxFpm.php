<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Support\Servers;

/** nginx in front of php-fpm (4 workers, pm static or dynamic). */
final class NginxFpm extends WebServer
{
    /** @param string $pm "static", or "dynamic" with pm.max_requests = 10 so workers are recycled */
    /** TLS certificate and key files, to serve HTTPS as server "localhost". */
    private ?array $tls = null;
    /** php-fpm's worker processes (pm.max_children). */
    public int $children = 4;
    /** pm.max_requests of a static pool (0: never recycle); the dynamic pool always recycles after 10. */
    public int $maxRequests = 0;
    /** ini values (name => value) nginx passes to PHP for this server's requests (PHP_VALUE). */
    public array $phpValues = [];
    /** More virtual hosts served by the same php-fpm pool: port => ini values for their requests. */
    public array $vhosts = [];

    public function __construct(?string $database, ?string $secret, string $dir, ?int $port = null, private string $pm = 'static')
    {
        parent::__construct($database, $secret, $dir, $port);
    }

    public function useTls(string $certificate, string $key): void
    {
        $this->tls = [$certificate, $key];
    }

    public function url(string $path = ''): string
    {
        return $this->tls ? "https://localhost:{$this->port}$path" : parent::url($path);
    }

    protected function commands(): array
    {
        $d = $this->dir;
        @mkdir("$d/nginx-tmp");
        $pm = $this->pm === 'static'
            ? "pm = static\npm.max_children = {$this->children}\npm.max_requests = {$this->maxRequests}\n"
            : "pm = dynamic\npm.max_children = {$this->children}\npm.start_servers = 2\npm.min_spare_servers = 1\npm.max_spare_servers = 3\npm.max_requests = 10\n";
        if ($this->user) {
            $pm .= "user = {$this->user[0]}\ngroup = {$this->user[1]}\n";
        }
        file_put_contents("$d/fpm.conf", <<<CONF
            [global]
            pid = $d/fpm.pid
            error_log = $d/fpm.log
            daemonize = no
            [www]
            listen = $d/fpm.sock
            $pm
            catch_workers_output = yes
            clear_env = no

            CONF);
        foreach ($this->engineIni() as $name => $value) {
            file_put_contents("$d/fpm.conf", "php_admin_value[$name] = \"$value\"\n", FILE_APPEND);
        }
        $listen = $this->tls
            ? "listen 127.0.0.1:{$this->port} ssl;\n server_name localhost;\n ssl_certificate {$this->tls[0]};\n ssl_certificate_key {$this->tls[1]};"
            : "listen 127.0.0.1:{$this->port};\n server_name _;";
        file_put_contents("$d/nginx.conf", <<<CONF
            worker_processes 1;
            pid $d/nginx.pid;
            error_log $d/nginx-error.log;
            daemon off;
            user root;
            events { worker_connections 512; }
            http {
                access_log off;
                client_body_temp_path $d/nginx-tmp/body;
                fastcgi_temp_path $d/nginx-tmp/fastcgi;
                proxy_temp_path $d/nginx-tmp/proxy;
                uwsgi_temp_path $d/nginx-tmp/uwsgi;
                scgi_temp_path $d/nginx-tmp/scgi;
                {$this->serverBlock($listen, $this->phpValues)}
                {$this->vhostBlocks()}
            }
            CONF);
        return [
            [self::fpmBinary(), '-R', '-F', '-y', "$d/fpm.conf"],
            ['nginx', '-c', "$d/nginx.conf"],
        ];
    }

    /** One nginx server block passing $phpValues to PHP. */
    private function serverBlock(string $listen, array $phpValues): string
    {
        $d = $this->dir;
        $frontController = $this->frontController === null ? ''
            : "location / { try_files \$uri /{$this->frontController}\$is_args\$args; }";
        $values = '';
        foreach ($phpValues as $name => $value) {
            $values .= "$name=$value\n";
        }
        $phpValue = $values === '' ? '' : 'fastcgi_param PHP_VALUE "' . $values . '";';
        return <<<BLOCK
            server {
                $listen
                root {$this->docroot};
                index index.php index.html;
                $frontController
                location ~ \.php$ {
                    include /etc/nginx/fastcgi_params;
                    fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
                    $phpValue
                    fastcgi_pass unix:$d/fpm.sock;
                }
            }
            BLOCK;
    }

    private function vhostBlocks(): string
    {
        $blocks = '';
        foreach ($this->vhosts as $port => $phpValues) {
            $blocks .= $this->serverBlock("listen 127.0.0.1:$port;\n server_name _;", $phpValues) . "\n";
        }
        return $blocks;
    }

    public function stop(): void
    {
        parent::stop();
        @unlink("{$this->dir}/fpm.sock");
    }

    protected function ready(): bool
    {
        return file_exists("{$this->dir}/fpm.sock");
    }

    public static function fpmBinary(): string
    {
        return trim((string) shell_exec('command -v php-fpm8.2 || command -v php-fpm')) ?: '/usr/sbin/php-fpm8.2';
    }

    public function workerPids(): array
    {
        return array_map('intval', array_filter(explode("\n", (string) shell_exec('pgrep -P ' . $this->pid(0)))));
    }

    public function log(): string
    {
        $log = parent::log();
        foreach (['fpm.log', 'nginx-error.log'] as $file) {
            if (is_file("{$this->dir}/$file")) {
                $log .= "\n--- $file\n" . file_get_contents("{$this->dir}/$file");
            }
        }
        return $log;
    }

    /** Kills php-fpm, master and workers, with SIGKILL (nginx stays and answers 502). */
    public function killFpm(): void
    {
        posix_kill(-$this->pid(0), SIGKILL);
        $deadline = microtime(true) + 10;
        while (proc_get_status($this->processes[0])['running'] && microtime(true) < $deadline) {
            usleep(20000);
        }
    }

    /** Restarts php-fpm only (nginx stays). */
    public function restartFpm(): void
    {
        $pid = $this->pid(0);
        posix_kill(-$pid, SIGTERM);
        @unlink("{$this->dir}/fpm.sock");
        $deadline = microtime(true) + 10;
        while (proc_get_status($this->processes[0])['running'] && microtime(true) < $deadline) {
            usleep(20000);
        }
        proc_close($this->processes[0]);
        $this->processes[0] = proc_open(array_merge(['setsid'], $this->commands()[0]), [
            0 => ['file', '/dev/null', 'r'], 1 => ['file', $this->logFile(), 'a'], 2 => ['file', $this->logFile(), 'a'],
        ], $pipes, $this->dir);
        $deadline = microtime(true) + 10;
        while (!file_exists("{$this->dir}/fpm.sock") && microtime(true) < $deadline) {
            usleep(20000);
        }
    }
}
