<?php
// JSON request/response: {"id": 1, "method": "add", "params": [2, 3]} -> {"id": 1, "result": 5}.
// Run with --message-mode framed (or line).
require getenv('WSS_PHP_LIB');  // greenbridge gives PHP the library's path

$client = Greenbridge\Connection::connect();
$client->sendText(json_encode(['hello' => $client->id(), 'path' => $client->env('REQUEST_PATH')]));

while (($message = $client->receive()) !== null) {
    $request = json_decode($message->data, true);
    if (!is_array($request) || !isset($request['method'])) {
        $client->sendText(json_encode(['error' => 'expected {"id", "method", "params"}']));
        continue;
    }
    $params = $request['params'] ?? [];
    switch ($request['method']) {
        case 'add':
            $response = ['result' => array_sum($params)];
            break;
        case 'upper':
            $response = ['result' => strtoupper((string)($params[0] ?? ''))];
            break;
        case 'bye':
            $client->close(1000, 'bye');
            exit(0);
        default:
            $response = ['error' => "unknown method {$request['method']}"];
    }
    $client->sendText(json_encode(['id' => $request['id'] ?? null] + $response));
}
