<?php
// A greenbridge handler without the PHP library: connect back, send the connection
// ID, echo every byte. Runs once per WebSocket connection; the bridge tells it where
// to connect. conf/raw.conf serves it in raw mode, where every reply is a binary message.

// No read timeout: PHP's default_socket_timeout (60 s) would end a quiet connection.
ini_set('default_socket_timeout', '-1');

$address = sprintf('tcp://%s:%s', getenv('WSS_TCP_HOST'), getenv('WSS_TCP_PORT'));
$socket = stream_socket_client($address, $errno, $errstr, 5);
if ($socket === false) {
    fwrite(STDERR, "cannot connect back to $address: $errstr\n");
    exit(1);
}
fwrite($socket, getenv('WSS_CONNECTION_ID') . "\n");

// fread() returns as soon as some bytes arrived; an empty string means the client left.
while (($data = fread($socket, 65536)) !== false && $data !== '') {
    for ($written = 0; $written < strlen($data); $written += $n) {
        $n = fwrite($socket, substr($data, $written));
        if ($n === false || $n === 0) {
            exit(0);
        }
    }
}
