<?php
// A chat room (README: "Tutorial: a chat"). The client joins a room with
// ?room= (default: lobby); each text message it sends is published to the
// room's channel as {"user": ..., "text": ...}, and the bridge delivers it to
// every client in the room, this one too, with no PHP process in between.
require getenv('WSS_PHP_LIB');  // greenbridge gives PHP the library's path

$client = Greenbridge\Connection::connect();
parse_str($client->env('REQUEST_QUERY') ?? '', $query);
$name = is_string($query['name'] ?? null) ? $query['name'] : 'guest';
$room = is_string($query['room'] ?? null) ? $query['room'] : 'lobby';

// With a connection token, the user is the token's (the bridge checked it);
// without, the client says who it is.
$user = $client->user() ?? $name;
// "chat:" keeps clients among the chat rooms: without it, ?room=user:42 would
// subscribe to another part of the app's channels.
$channel = "chat:$room";

if (!$client->subscribe($channel)) {  // a room name a channel cannot have
    $client->close(1008, $client->lastError());
    exit;
}
$client->sendText(json_encode(['joined' => $channel, 'user' => $user]));

while (($message = $client->receive()) !== null) {
    if (!$message->isText()) {
        continue;
    }
    $said = json_encode(['user' => $user, 'text' => $message->data]);
    if (!$client->publish($channel, $said, 'json')) {  // over --max-payload-size, for one
        $client->sendText(json_encode(['error' => $client->lastError()]));
    }
}
