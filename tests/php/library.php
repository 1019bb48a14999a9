<?php
// Test handler written with Greenbridge.php; ?do= picks what it does (see tests/test_messages.py).
require __DIR__ . '/../../greenbridge/php/Greenbridge.php';

use Greenbridge\Connection;
use Greenbridge\Message;

parse_str(getenv('WSS_REQUEST_QUERY') ?: '', $q);
$do = $q['do'] ?? 'echo';
$client = Connection::connect();

switch ($do) {
    case 'api':
        $env = $client->environment();
        $client->sendText(json_encode([
            'id' => $client->id(),
            'mode' => $client->mode(),
            'subprotocol' => $client->subprotocol(),
            'path' => $client->env('REQUEST_PATH'),
            'path_prefixed' => $client->env('WSS_REQUEST_PATH'),
            'missing' => $client->env('NO_SUCH_VARIABLE'),
            'header' => $client->header('X-Test'),
            'headers_decoded' => is_array($env['WSS_REQUEST_HEADERS']),
            'only_wss' => count(array_filter(array_keys($env), function ($n) { return strpos($n, 'WSS_') !== 0; })) === 0,
            'connected' => $client->isConnected(),
            'stream' => is_resource($client->stream()),
        ]));
        break;
    case 'types':
        $client->sendText('text');
        $client->sendBinary("\x00binary");
        $client->send('auto é');
        $client->send("\xff\xfe");
        $client->send('forced binary', Message::BINARY);
        break;
    case 'timeout':
        $start = microtime(true);
        $message = $client->receive(0.3);
        $client->sendText(json_encode([
            'message' => $message,
            'connected' => $client->isConnected(),
            'waited' => microtime(true) - $start >= 0.25,
        ]));
        break;
    case 'select':
        // Wait with stream_select() beside another stream, then drain with receive(0),
        // until the client's three messages are in (they may come in one read or three).
        $idle = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        $got = [];
        while (count($got) < 3) {
            $read = [$client->stream(), $idle[0]];
            $write = $except = null;
            if (!stream_select($read, $write, $except, 30)) {
                break;
            }
            while (($message = $client->receive(0)) !== null) {
                $got[] = $message->data;
            }
        }
        $client->sendText(json_encode($got));
        break;
    case 'interrupted':
        // A signal whose handler does not restart system calls ends a blocking receive().
        pcntl_async_signals(true);
        pcntl_signal(SIGALRM, function () {}, false);
        pcntl_alarm(1);
        $message = $client->receive();
        $client->sendText(json_encode(['message' => $message, 'connected' => $client->isConnected()]));
        $next = $client->receive();
        $client->sendText($next === null ? 'lost' : 'next: ' . $next->data);
        break;
    case 'nonblocking':
        // receive() without a timeout still waits on a stream made non-blocking.
        stream_set_blocking($client->stream(), false);
        fwrite(STDERR, "receiving\n");  // the test sends only once this is in the log
        $message = $client->receive();
        $client->sendText($message === null ? 'returned early' : 'got: ' . $message->data);
        break;
    case 'sockets_extension':
        $client->sendText('sockets extension: ' . (extension_loaded('sockets') ? 'yes' : 'no'));
        while (($message = $client->receive()) !== null) {
            $client->send($message);
        }
        break;
    case 'close':
        $client->receive();
        $client->close((int)$q['code'], $q['reason'] ?? '');
        exit(0);
    case 'report_close':
        // Record how the client left, for the test to read.
        while ($client->receive() !== null) {
        }
        file_put_contents($q['file'], json_encode([
            'code' => $client->closeCode(), 'reason' => $client->closeReason(),
            'connected' => $client->isConnected(),
        ]));
        exit(0);
    case 'raw_bytes':
        // Bypass the library: write what a broken PHP might write.
        fwrite($client->stream(), hex2bin($q['hex']));
        $client->receive();
        exit(0);
    case 'write_pieces':
        // Write the hex-encoded bytes in pieces cut at the given offsets, then exit:
        // what a broken PHP might write, as split as the test wants.
        $data = hex2bin($q['hex']);
        $start = 0;
        foreach (array_filter(explode(',', $q['cuts'] ?? '')) as $cut) {
            fwrite($client->stream(), substr($data, $start, (int)$cut - $start));
            $start = (int)$cut;
            usleep(2000);  // so the bridge reads the pieces apart
        }
        fwrite($client->stream(), substr($data, $start));
        exit(0);
    case 'bad_text':
        try {
            $client->sendText("\xff");
        } catch (InvalidArgumentException $e) {
            $client->sendText('refused: ' . $e->getMessage());
        }
        break;
}

while (($message = $client->receive()) !== null) {
    $client->send($message);
}
