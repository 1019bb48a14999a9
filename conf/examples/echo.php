<?php
// Echo every message back with its type. Run with any --message-mode;
// framed keeps text/binary and close codes exact.
require __DIR__ . '/../../greenbridge/php/Greenbridge.php';

$client = Greenbridge\Connection::connect();
while (($message = $client->receive()) !== null) {
    $client->send($message);
}
