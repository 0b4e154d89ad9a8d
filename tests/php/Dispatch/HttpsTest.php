<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Dispatch;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\EngineTestCase;
use AsyncEngine\Tests\Support\Http;
use AsyncEngine\Tests\Support\Servers\NginxFpm;

/**
 * Self-requests over HTTPS through nginx + php-fpm: the certificate is
 * checked against the site's host name (a test CA, trusted through
 * SSL_CERT_FILE), while the connection goes to the server's own address.
 */
final class HttpsTest extends EngineTestCase
{
    private NginxFpm $server;

    private function certificate(string $name): array
    {
        $d = $this->dir;
        if (!is_file("$d/ca.pem")) {
            exec("openssl req -x509 -newkey rsa:2048 -nodes -keyout $d/ca.key -out $d/ca.pem -days 2 -subj /CN=async-engine-test-ca 2>&1", $out, $rc);
            $this->assertSame(0, $rc, implode("\n", $out));
        }
        file_put_contents("$d/$name.ext", "subjectAltName=DNS:$name\n");
        exec("openssl req -newkey rsa:2048 -nodes -keyout $d/$name.key -out $d/$name.csr -subj /CN=$name 2>&1"
            . " && openssl x509 -req -in $d/$name.csr -CA $d/ca.pem -CAkey $d/ca.key -CAcreateserial -out $d/$name.pem -days 2 -extfile $d/$name.ext 2>&1", $out, $rc);
        $this->assertSame(0, $rc, implode("\n", $out));
        return ["$d/$name.pem", "$d/$name.key"];
    }

    private function serve(string $certificateFor): void
    {
        putenv("SSL_CERT_FILE={$this->dir}/ca.pem");
        [$cert, $key] = $this->certificate($certificateFor);
        $this->server = new NginxFpm($this->db, self::SECRET, $this->dir);
        $this->server->useTls($cert, $key);
        $this->server->start();
    }

    protected function tearDown(): void
    {
        $this->server->stop();
        putenv('SSL_CERT_FILE');
        parent::tearDown();
    }

    private function deferFromPage(): string
    {
        $r = Http::request($this->server->url('/defer.php?' . http_build_query(['n' => 1, 'file' => $this->dir . '/effects.txt'])),
            timeout: 10, curl: [CURLOPT_CAINFO => "{$this->dir}/ca.pem", CURLOPT_RESOLVE => ["localhost:{$this->server->port}:127.0.0.1"]]);
        $this->assertSame(200, $r['status'], $r['body'] . $r['error'] . $this->server->log());
        return json_decode($r['body'], true)[0];
    }

    private function waitFor(string $id, callable $until): array
    {
        $deadline = microtime(true) + 10;
        do {
            $status = Engine::status($id);
            if ($until($status)) {
                return $status;
            }
            usleep(50000);
        } while (microtime(true) < $deadline);
        return $status;
    }

    public function testTasksRunOverHttpsWithTheCertificateChecked(): void
    {
        $this->serve('localhost');
        $id = $this->deferFromPage();
        $status = $this->waitFor($id, fn (array $s) => $s['state'] === 'done');
        $this->assertSame('done', $status['state'], json_encode($status) . $this->server->log());
        $this->assertStringContainsString('web 0', (string) file_get_contents($this->dir . '/effects.txt'));
    }

    public function testACertificateForAnotherHostIsRefused(): void
    {
        $this->serve('elsewhere.example');
        $id = $this->deferFromPageIgnoringTheCertificate();
        $deadline = microtime(true) + 10;
        while (Engine::stats()['failing_endpoints'] === [] && microtime(true) < $deadline) {
            usleep(20000);
        }
        $this->assertSame(['queued', 0], [Engine::status($id)['state'], Engine::status($id)['attempt']]);
        $failing = Engine::stats()['failing_endpoints'];
        $this->assertNotEmpty($failing, $this->server->log());
        $this->assertMatchesRegularExpression('/certificate|NotValidForName/i', $failing[0]['last_error']);
    }

    private function deferFromPageIgnoringTheCertificate(): string
    {
        $r = Http::request($this->server->url('/defer.php?n=1'), timeout: 10, curl: [CURLOPT_SSL_VERIFYPEER => false,
            CURLOPT_SSL_VERIFYHOST => 0, CURLOPT_RESOLVE => ["localhost:{$this->server->port}:127.0.0.1"]]);
        return json_decode($r['body'], true)[0];
    }
}
