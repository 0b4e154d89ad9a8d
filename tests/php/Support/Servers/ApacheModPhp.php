<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Support\Servers;

/**
 * Apache 2.4 with mod_php and the prefork MPM (4 to 8 children), with
 * Apache's default `UseCanonicalName Off` (the Host header sets
 * SERVER_NAME and SERVER_PORT: the engine must not trust them). Its
 * children run as nobody, so the test's directory is made writable for
 * them and its database is theirs.
 */
final class ApacheModPhp extends WebServer
{
    protected function commands(): array
    {
        $d = $this->dir;
        $modules = '/usr/lib/apache2/modules';
        chmod($d, 0777);
        foreach (str_starts_with((string) $this->database, 'postgres://') ? [] : ['', '-wal', '-shm'] as $suffix) {
            if (!file_exists($this->database . $suffix)) {
                touch($this->database . $suffix);
            }
            // Apache's children (nobody) own it; the test runs as root.
            chown($this->database . $suffix, 'nobody');
            chgrp($this->database . $suffix, 'nogroup');
            chmod($this->database . $suffix, 0600);
        }
        $docroot = $this->docroot;
        file_put_contents("$d/apache.conf", <<<CONF
            LoadModule mpm_prefork_module $modules/mod_mpm_prefork.so
            LoadModule authz_core_module $modules/mod_authz_core.so
            LoadModule dir_module $modules/mod_dir.so
            LoadModule php_module $modules/libphp8.2.so
            ServerName 127.0.0.1:{$this->port}
            Listen 127.0.0.1:{$this->port}
            PidFile $d/apache.pid
            DefaultRuntimeDir $d
            Mutex file:$d default
            ErrorLog $d/apache-error.log
            User nobody
            Group nogroup
            StartServers 4
            MinSpareServers 2
            MaxSpareServers 4
            MaxRequestWorkers 8
            DocumentRoot $docroot
            <Directory $docroot>
                Require all granted
            </Directory>
            <FilesMatch "\.php$">
                SetHandler application/x-httpd-php
            </FilesMatch>
            php_admin_value async_engine.database {$this->database}
            php_admin_value async_engine.secret {$this->secret}
            CONF);
        return [['apache2', '-f', "$d/apache.conf", '-DFOREGROUND']];
    }

    public function workerPids(): array
    {
        return self::descendants($this->pid());
    }

    public function log(): string
    {
        $file = "{$this->dir}/apache-error.log";
        return parent::log() . (is_file($file) ? "\n--- apache-error.log\n" . file_get_contents($file) : '');
    }
}
