<?php
// Server push: a tick every ?interval= seconds (default 1) until the client
// leaves; a message from the client ("pause" / "resume") is answered at once.
require getenv('WSS_PHP_LIB');  // greenbridge gives PHP the library's path

$client = Greenbridge\Connection::connect();
parse_str($client->env('REQUEST_QUERY') ?? '', $query);
$interval = max(0.01, (float)($query['interval'] ?? 1));
$paused = false;
$count = 0;
$next = microtime(true) + $interval;
while ($client->isConnected()) {
    $message = $client->receive(max(0.0, $next - microtime(true)));
    if ($message !== null) {
        $paused = $message->data === 'pause';
        $client->sendText(json_encode(['paused' => $paused]));
        continue;
    }
    if (microtime(true) >= $next) {
        if (!$paused) {
            $client->sendText(json_encode(['tick' => ++$count, 'time' => microtime(true)]));
        }
        $next += $interval;
    }
}
