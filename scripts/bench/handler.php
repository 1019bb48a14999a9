<?php
// The benchmark's PHP handler, the same for both servers: under greenbridge
// it talks over the back-connection socket, under websocketd over stdin and
// stdout. The query string picks the work: ?echo (default) or ?stream.
$id = getenv('WSS_CONNECTION_ID');
if (getenv('WSS_MESSAGE_MODE') === 'framed') {
    // greenbridge's framed mode, through its PHP library: message by message.
    require __DIR__ . '/../../greenbridge/php/Greenbridge.php';
    $client = Greenbridge\Connection::connect();
    stream_set_timeout($client->stream(), 86400);
    while (($message = $client->receive()) !== null) {
        $client->send($message);
    }
    exit(0);
}
if ($id !== false) {
    $address = sprintf('tcp://%s:%s', getenv('WSS_TCP_HOST'), getenv('WSS_TCP_PORT'));
    $in = $out = stream_socket_client($address, $errno, $errstr, 5);
    fwrite($out, $id . "\n");
    $query = getenv('WSS_REQUEST_QUERY');
} else {
    $in = STDIN;
    $out = STDOUT;
    $query = getenv('QUERY_STRING');
}
// The same reads and writes for both: unbuffered, up to 64 KiB at a time,
// and no read timeout (PHP's default_socket_timeout, 60 s, would end idle
// back-connections; stdin has none).
stream_set_timeout($in, 86400);
foreach ([$in, $out] as $stream) {
    stream_set_chunk_size($stream, 65536);
    stream_set_read_buffer($stream, 0);
    stream_set_write_buffer($stream, 0);
}

function write_all($stream, $data) {
    for ($done = 0, $size = strlen($data); $done < $size; $done += $n) {
        $n = fwrite($stream, $done ? substr($data, $done) : $data);
        if ($n === false || $n === 0) exit(0);
    }
}

if ($query === 'stream') {
    // As fast as the reader takes it, until it goes away.
    $chunk = str_repeat('s', 65536);
    while (true) write_all($out, $chunk);
}
while (($data = fread($in, 65536)) !== false && $data !== '') {
    write_all($out, $data);
}
