<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Support;

/**
 * The one HTTP client of the tests, benchmarks and chaos suite (curl): a
 * request in, status, body, response headers, time and curl's error out.
 */
final class Http
{
    /**
     * @param array<int|string, string> $headers "Name" => "value", or whole "Name: value" lines
     * @param string|array<string, string>|null $body a raw body, form fields, or null for none
     * @param array<int, mixed> $curl further curl options (TLS, cookie jar, host resolution)
     * @return array{status: int, body: string, headers: array<string, string>, seconds: float, error: string}
     *         headers by lower-case name; status 0 when no answer came
     */
    public static function request(
        string $url,
        ?string $method = null,
        array $headers = [],
        string|array|null $body = null,
        float $timeout = 30,
        array $curl = []
    ): array {
        $lines = [];
        foreach ($headers as $name => $value) {
            $lines[] = is_int($name) ? $value : "$name: $value";
        }
        $received = [];
        $ch = curl_init($url);
        curl_setopt_array($ch, [
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_TIMEOUT_MS => (int) ($timeout * 1000),
            CURLOPT_HTTPHEADER => $lines,
            CURLOPT_HEADERFUNCTION => static function ($ch, string $line) use (&$received): int {
                if (str_contains($line, ':')) {
                    [$name, $value] = explode(':', $line, 2);
                    $received[strtolower($name)] = trim($value);
                }
                return strlen($line);
            },
        ] + $curl);
        if ($body !== null) {
            curl_setopt($ch, CURLOPT_POSTFIELDS, is_array($body) ? http_build_query($body) : $body);
        }
        if ($method !== null) {
            curl_setopt($ch, CURLOPT_CUSTOMREQUEST, $method);
        }
        $started = microtime(true);
        $answer = curl_exec($ch);
        $seconds = microtime(true) - $started;
        $response = [
            'status' => (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE),
            'body' => is_string($answer) ? $answer : '',
            'headers' => $received,
            'seconds' => $seconds,
            'error' => curl_error($ch),
        ];
        curl_close($ch);
        return $response;
    }
}
