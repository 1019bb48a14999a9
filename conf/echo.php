<?php
// Echo every message back with its type: text stays text, binary stays binary.
// conf/bridge.conf serves it in framed mode (line mode works too; raw mode
// cannot tell text from binary, so everything comes back binary).
// greenbridge tells PHP where its library is in WSS_PHP_LIB.
require getenv('WSS_PHP_LIB');
$client = Greenbridge\Connection::connect();
while (($message = $client->receive()) !== null) {
    $client->send($message);
}
