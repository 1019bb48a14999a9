<?php
// Test handler: WSS_REQUEST_QUERY picks what it does (see tests/test_*.py).
parse_str(getenv('WSS_REQUEST_QUERY') ?: '', $q);
$do = $q['do'] ?? 'echo';

// A test that counts PHP processes names a file: each process appends "start PID" when it
// starts and "end PID" when it ends (on SIGTERM too). Appending one short line is atomic, so
// the file's order is the order of the events.
$process_log = getenv('GREENBRIDGE_TEST_PROCESS_LOG');
if ($process_log) {
    $record = function ($event) use ($process_log) {
        file_put_contents($process_log, $event . ' ' . getmypid() . "\n", FILE_APPEND);
    };
    $record('start');
    register_shutdown_function($record, 'end');
    pcntl_async_signals(true);
    pcntl_signal(SIGTERM, function () { exit(0); });
}

if ($do === 'exit_early') {
    file_put_contents($q['file'], "attempt\n", FILE_APPEND);
    exit(1);
}
if ($do === 'never_connect') {
    sleep(60);
    exit(0);
}

$socket = stream_socket_client(
    'tcp://' . getenv('WSS_TCP_HOST') . ':' . getenv('WSS_TCP_PORT'), $errno, $errstr, 5);
$id = getenv('WSS_CONNECTION_ID') . "\n";
// A PHP held up between connect() and its ID line, as on an overloaded machine.
usleep((int)($q['id_delay_ms'] ?? 0) * 1000);

function send_all($socket, $data) {
    for ($done = 0; $done < strlen($data); $done += $n) {
        $n = fwrite($socket, substr($data, $done));
        if ($n === false || $n === 0) exit(0);
    }
}

// send_all, saying once on stderr "PHP blocked for 1s" when the socket took nothing for a
// second: the sign that the bridge holds PHP back, for a test to wait on.
function send_all_telling_when_blocked($socket, $data) {
    static $told = false;
    stream_set_blocking($socket, false);
    for ($done = 0; $done < strlen($data); $done += $n) {
        $n = fwrite($socket, substr($data, $done));
        if ($n === false) exit(0);
        if ($n === 0) {
            $read = $except = null;
            $write = [$socket];
            if (!stream_select($read, $write, $except, $told ? 60 : 1) && !$told) {
                fwrite(STDERR, "PHP blocked for 1s\n");
                $told = true;
            }
        }
    }
    stream_set_blocking($socket, true);
}

switch ($do) {
    case 'env':
        $env = [];
        foreach (getenv() as $name => $value) {
            if (strpos($name, 'WSS_') === 0 || $name === 'GREENBRIDGE_TEST_INHERITED') $env[$name] = $value;
        }
        send_all($socket, $id . json_encode($env));
        if (!empty($q['then_exit'])) exit(0);
        break;
    case 'fullenv':
        send_all($socket, $id . json_encode(getenv()));
        break;
    case 'early':
        // The ID line and the first bytes for the client in one write.
        send_all($socket, $id . 'early bytes');
        break;
    case 'exit':
        send_all($socket, $id);
        fread($socket, 65536);
        exit((int)$q['code']);
    case 'crash':
        send_all($socket, $id);
        fread($socket, 65536);
        posix_kill(getmypid(), SIGKILL);
        break;
    case 'close_socket':
        send_all($socket, $id);
        fread($socket, 65536);
        fclose($socket);
        usleep(200000);
        exit(0);
    case 'output':
        fwrite(STDERR, "a line on stderr\n");
        fwrite(STDOUT, "a line on stdout\n");
        fwrite(STDERR, str_repeat('x', (int)($q['long'] ?? 0)) . "\n");
        // A last line without a newline: it ends only when PHP exits.
        fwrite(STDOUT, "last words, no newline");
        send_all($socket, $id);
        break;
    case 'child':
        // A child in the script's process group that would outlive it.
        $pid = (int)shell_exec('sleep 300 > /dev/null 2>&1 & echo $!');
        send_all($socket, $id . $pid);
        break;
    case 'flood':
        send_all($socket, $id);
        $chunk = str_repeat('z', 65536);
        $send = empty($q['tell_blocked']) ? 'send_all' : 'send_all_telling_when_blocked';
        for ($i = 0; $i < (int)$q['chunks']; $i++) $send($socket, $chunk);
        fwrite(STDERR, "flood done\n");
        fread($socket, 1);
        exit(0);
    case 'sink':
        // Connected, never reads.
        send_all($socket, $id);
        sleep((int)($q['seconds'] ?? 60));
        exit(0);
    case 'close_output':
        fclose(STDOUT);
        fclose(STDERR);
        send_all($socket, $id);
        break;
    case 'log_message':
        // A script that logs what its client sent: the first message goes to stderr.
        send_all($socket, $id);
        fwrite(STDERR, fread($socket, 65536) . "\n");
        break;
    case 'ignore_term':
        pcntl_async_signals(true);
        pcntl_signal(SIGTERM, SIG_IGN);
        send_all($socket, $id . getmypid());
        while (true) { usleep(100000); }
    default:
        send_all($socket, $id);
}

while (($data = fread($socket, 65536)) !== false && $data !== '') {
    send_all($socket, $data);
}
