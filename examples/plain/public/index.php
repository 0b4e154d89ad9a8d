<?php

declare(strict_types=1);

// The page: signs a user up and defers the welcome mail. It answers at once;
// the mail goes out from worker.php in a request the server sends itself.

use AsyncEngine\Engine;

require dirname(__DIR__) . '/src/bootstrap.php';

$email = (string) ($_GET['email'] ?? 'ann@example.com');
$id = Engine::defer('/worker.php', 'welcome-mail', ['to' => $email]);

header('Content-Type: text/plain; charset=utf-8');
echo "Signed up $email; welcome mail queued as task $id\n";
