<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\Support\Sse;

/**
 * Server-Sent Event subscribers over curl_multi, as browsers' EventSource
 * behaves: each one reconnects when its connection ends or fails, sending
 * the id of the last event it received as Last-Event-ID.
 */
final class SseClients
{
    /** @var list<list<array{id: string, data: string, type: ?string}>> events each client received, in order */
    public array $events = [];
    /** @var list<int> connections each client opened */
    public array $connects = [];
    /** @var list<int> HTTP status of each client's latest response */
    public array $status = [];
    /** @var \CurlMultiHandle */
    private $multi;
    /** @var array<int, \CurlHandle> client => open handle */
    private array $handles = [];
    /** @var array<int, float> client => when to reconnect */
    private array $retryAt = [];
    /** @var list<string> */
    private array $buffers = [];

    /** @param array<string, string> $headers sent on every connection */
    public function __construct(private string $url, int $count, private array $headers = [], private float $retry = 0.1)
    {
        $this->multi = curl_multi_init();
        for ($i = 0; $i < $count; $i++) {
            $this->events[$i] = [];
            $this->connects[$i] = 0;
            $this->status[$i] = 0;
            $this->buffers[$i] = '';
            $this->connect($i);
        }
    }

    private function connect(int $i): void
    {
        $headers = ['Accept: text/event-stream'];
        foreach ($this->headers as $name => $value) {
            $headers[] = "$name: $value";
        }
        $last = end($this->events[$i]);
        if ($last !== false) {
            $headers[] = 'Last-Event-ID: ' . $last['id'];
        }
        $ch = curl_init($this->url);
        curl_setopt_array($ch, [
            CURLOPT_HTTPHEADER => $headers,
            CURLOPT_CONNECTTIMEOUT => 2,
            CURLOPT_WRITEFUNCTION => function ($ch, string $chunk) use ($i): int {
                $this->status[$i] = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
                $this->buffers[$i] .= str_replace("\r\n", "\n", $chunk);
                while (($end = strpos($this->buffers[$i], "\n\n")) !== false) {
                    $block = substr($this->buffers[$i], 0, $end);
                    $this->buffers[$i] = substr($this->buffers[$i], $end + 2);
                    $this->parse($i, $block);
                }
                return strlen($chunk);
            },
        ]);
        $this->buffers[$i] = '';
        $this->connects[$i]++;
        $this->handles[$i] = $ch;
        curl_multi_add_handle($this->multi, $ch);
    }

    private function parse(int $i, string $block): void
    {
        $id = null;
        $type = null;
        $data = [];
        foreach (explode("\n", $block) as $line) {
            if (str_starts_with($line, ':')) {
                continue;
            }
            [$field, $value] = array_pad(explode(':', $line, 2), 2, '');
            $value = str_starts_with($value, ' ') ? substr($value, 1) : $value;
            match ($field) {
                'id' => $id = $value,
                'event' => $type = $value,
                'data' => $data[] = $value,
                default => null,
            };
        }
        if ($id !== null) {
            $this->events[$i][] = ['id' => $id, 'data' => implode("\n", $data), 'type' => $type];
        }
    }

    /** Runs the connections for up to $seconds, reconnecting those that ended. */
    public function pump(float $seconds): void
    {
        $until = microtime(true) + $seconds;
        do {
            curl_multi_exec($this->multi, $running);
            while ($done = curl_multi_info_read($this->multi)) {
                $i = array_search($done['handle'], $this->handles, true);
                curl_multi_remove_handle($this->multi, $done['handle']);
                unset($this->handles[$i]);
                $this->retryAt[$i] = microtime(true) + $this->retry;
            }
            foreach ($this->retryAt as $i => $at) {
                if (microtime(true) >= $at) {
                    unset($this->retryAt[$i]);
                    $this->connect($i);
                }
            }
            $left = $until - microtime(true);
            if ($left > 0) {
                curl_multi_select($this->multi, min($left, 0.02));
            }
        } while (microtime(true) < $until);
    }

    /** Pumps until $done() is true or $timeout passes; whether it became true. */
    public function until(callable $done, float $timeout): bool
    {
        $deadline = microtime(true) + $timeout;
        while (!$done($this)) {
            if (microtime(true) >= $deadline) {
                return false;
            }
            $this->pump(0.02);
        }
        return true;
    }

    /** The ids client $i received. */
    public function ids(int $i): array
    {
        return array_column($this->events[$i], 'id');
    }

    public function close(): void
    {
        foreach ($this->handles as $ch) {
            curl_multi_remove_handle($this->multi, $ch);
        }
        $this->handles = [];
        $this->retryAt = [];
    }

    public function __destruct()
    {
        $this->close();
    }
}
