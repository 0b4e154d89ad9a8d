<?php

// What a WP-Cron-style loopback spawn hits: the request is abandoned by the
// caller after 10 ms, so the script keeps going and finds nothing due.
// ?boot_ms=N first spends N ms, as wp-cron.php does loading WordPress.
ignore_user_abort(true);
usleep(1000 * min(1000, (int) ($_GET['boot_ms'] ?? 0)));
header('Content-Type: text/plain');
echo '';
