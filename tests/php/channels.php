<?php
// Channels through Greenbridge.php (see tests/test_php_channels.py). Each client text
// message is a JSON command; the answer says what the library returned:
//   {"op": "subscribe"|"unsubscribe", "channel": ...}
//   {"op": "subscribe", "channel": ..., "offset": ..., "epoch": ...} (recovery: the answer's
//    "recovery" is what lastRecovery() returned)
//   {"op": "publish", "channel": ..., "data": ... | "hex": ..., "type": null|"text"|...,
//    "repeat": times the data is repeated (default 1)}
// ("channel_hex" instead of "channel" for names that are not UTF-8)
//   {"op": "user"}
// ?do=held first waits until `bytes` bytes of client messages are in its socket,
// unread, then subscribes: the reply comes behind them.
require __DIR__ . '/../../greenbridge/php/Greenbridge.php';

use Greenbridge\Connection;

parse_str(getenv('WSS_REQUEST_QUERY') ?: '', $q);
$client = Connection::connect();

if (($q['do'] ?? '') === 'held') {
    $want = (int)$q['bytes'];
    $deadline = microtime(true) + 10;
    while (strlen((string)stream_socket_recvfrom($client->stream(), $want, STREAM_PEEK)) < $want
           && microtime(true) < $deadline) {
        usleep(1000);
    }
    $ok = $client->subscribe('held');
    $got = [];
    foreach ([1, 2, 3] as $ignored) {
        $message = $client->receive(10);
        $got[] = $message === null ? null : [$message->type, bin2hex($message->data)];
    }
    $client->sendText(json_encode(['ok' => $ok, 'got' => $got]));
}

while (($message = $client->receive()) !== null) {
    $command = json_decode($message->data, true);
    $channel = isset($command['channel_hex']) ? hex2bin($command['channel_hex']) : ($command['channel'] ?? '');
    switch ($command['op']) {
        case 'subscribe':
            $ok = $client->subscribe($channel, $command['offset'] ?? null, $command['epoch'] ?? null);
            break;
        case 'unsubscribe':
            $ok = $client->unsubscribe($channel);
            break;
        case 'publish':
            $data = isset($command['hex']) ? hex2bin($command['hex']) : $command['data'];
            $data = str_repeat($data, $command['repeat'] ?? 1);
            $ok = $client->publish($channel, $data, $command['type'] ?? null);
            break;
        case 'user':
            $ok = $client->user();
            break;
    }
    $client->sendText(json_encode(['op' => $command['op'], 'ok' => $ok, 'error' => $client->lastError(),
                                   'recovery' => $client->lastRecovery()]));
}
