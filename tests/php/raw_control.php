<?php
// A PHP stand-in that speaks the framed protocol by hand (no library): it connects back,
// writes the bytes of ?hex=, then reads ?replies= frames from the bridge and sends the
// client each one's hex as a text frame, then waits for the client to leave (?exit: it
// exits right after writing).
parse_str(getenv('WSS_REQUEST_QUERY') ?: '', $q);
$sock = stream_socket_client('tcp://' . getenv('WSS_TCP_HOST') . ':' . getenv('WSS_TCP_PORT'));
fwrite($sock, getenv('WSS_CONNECTION_ID') . "\n");

function read_exactly($sock, $length)
{
    $data = '';
    while (strlen($data) < $length) {
        $chunk = fread($sock, $length - strlen($data));
        if ($chunk === false || $chunk === '') {
            exit(0);
        }
        $data .= $chunk;
    }
    return $data;
}

$bytes = hex2bin($q['hex']);
$bytes .= str_repeat("\x00", (int)($q['zeros'] ?? 0));  // a long payload, without a long URL
fwrite($sock, $bytes);
if (isset($q['exit'])) {
    exit(0);
}
for ($i = 0; $i < (int)($q['replies'] ?? 0); $i++) {
    $header = read_exactly($sock, 5);
    $frame = $header . read_exactly($sock, unpack('N', $header, 1)[1]);
    fwrite($sock, pack('CN', 1, strlen(bin2hex($frame))) . bin2hex($frame));
}
while (!feof($sock) && fread($sock, 65536) !== false) {
}
