<?php

// A page as a routed application serves it: it reads the request from
// $_SERVER, which every real front controller does (PHP builds that array on
// first use). The memory step serves it with and without the extension, so
// PHP's own cost of $_SERVER is on both sides.

$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);
echo "route $path for {$_SERVER['HTTP_HOST']}\n";
