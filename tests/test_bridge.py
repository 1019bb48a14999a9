"""The core bridge end to end: real server, real PHP, a real WebSocket client."""

import json
import os
import re
import signal
import socket
import threading
import time

import gevent
import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from support import (ECHO_PHP, RawClient, access_lines, assert_head_matches_get,
                     assert_no_other_connection_ran, closed_with, frame, php_environment, raw_http,
                     server_unread_bytes, split_response_head, stopped_log, upgrade_request,
                     wait_until)


def receive_bytes(ws, count, timeout=10):
    """Collect binary messages until `count` bytes arrived (raw mode splits reads)."""
    received = bytearray()
    while len(received) < count:
        received += ws.recv(timeout=timeout)
    return bytes(received)


# -- data both ways -------------------------------------------------------

def test_shipped_echo_handler_echoes_text_and_binary(start_bridge):
    bridge = start_bridge(script=ECHO_PHP)
    with connect(bridge.url("/chat")) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo".encode("utf-8")  # raw mode: PHP bytes go out binary
        ws.send(b"\x00\x01\xffbinary")
        assert ws.recv(timeout=10) == b"\x00\x01\xffbinary"
        for number in range(20):
            ws.send("message %d" % number)
            assert ws.recv(timeout=10) == b"message %d" % number


def test_four_mib_message_round_trip(start_bridge):
    bridge = start_bridge()
    payload = os.urandom(4 * 1024 * 1024)
    with connect(bridge.url(), max_size=None) as ws:
        ws.send(payload)
        assert receive_bytes(ws, len(payload)) == payload


def test_php_output_is_split_at_buffer_size(start_bridge):
    bridge = start_bridge("--buffer-size", "1000")
    with connect(bridge.url()) as ws:
        ws.send(b"x" * 5000)
        sizes = []
        while sum(sizes) < 5000:
            sizes.append(len(ws.recv(timeout=10)))
    assert max(sizes) <= 1000


def test_fifty_concurrent_connections(start_bridge):
    bridge = start_bridge()
    failures = []

    def client(number):
        try:
            with connect(bridge.url("/?n=%d" % number)) as ws:
                for round_trip in range(5):
                    message = ("%d-%d" % (number, round_trip)).encode()
                    ws.send(message)
                    assert ws.recv(timeout=20) == message
        except Exception as error:  # collected and reported below
            failures.append((number, repr(error)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not [thread for thread in threads if thread.is_alive()], "clients still running"
    assert failures == []
    bridge.wait_no_php()


def test_bytes_php_sends_with_its_id_line_reach_the_client(start_bridge):
    bridge = start_bridge()
    with connect(bridge.url("/?do=early")) as ws:
        assert ws.recv(timeout=10) == b"early bytes"


# Every connection runs on one event loop: a blocking call on the data path (a sleep or a
# socket gevent does not patch) stalls them all, which other tests see only as slowness.
# gevent's monitor thread reports each stretch of 0.1 s (its default) in which the loop ran
# nothing else, on stderr, so in the log.
EVENT_LOOP_MONITOR = {"GEVENT_MONITOR_THREAD_ENABLE": "true", "GEVENT_MAX_BLOCKING_TIME": "0.1"}


def test_bridging_never_blocks_the_event_loop(start_bridge):
    # The variables are the ones this gevent reads (a renamed one would turn the check off).
    assert {gevent.config.settings[name].environment_key
            for name in ("monitor_thread", "max_blocking_time")} == set(EVENT_LOOP_MONITOR)
    bridge = start_bridge("--ping-interval", "0.2", "--ping-timeout", "1", env=EVENT_LOOP_MONITOR)
    with connect(bridge.url(), max_size=None) as ws:
        messages = [b"message %d" % number for number in range(20)]
        for message in messages:  # all at once: the pumps go from one to the next
            ws.send(message)
        assert receive_bytes(ws, len(b"".join(messages))) == b"".join(messages)
        large = os.urandom(1 << 20)
        ws.send(large)
        assert receive_bytes(ws, len(large)) == large
    heartbeat = RawClient(bridge.port)  # sends nothing but pongs: the heartbeat pings it
    try:
        for _ in range(3):
            assert heartbeat.read_frame() == (0x9, b"greenbridge")
            heartbeat.sock.sendall(frame(0xA, b"greenbridge"))
    finally:
        heartbeat.close()
    log = stopped_log(bridge)
    report = log.find("appears to be blocked")
    assert report < 0, log[max(0, report - 100):report + 1000]  # the blocked greenlet's stack


# -- what PHP is told -------------------------------------------------------

def test_environment_given_to_php(start_bridge):
    bridge = start_bridge(env={"GREENBRIDGE_TEST_INHERITED": "yes",
                               "WSS_CONFIG_SECRET_THING": "hidden"})
    headers = {"Origin": "http://example.test", "User-Agent": "env-test/1.0",
               "X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.10",
               "X-Custom": "ünïcode"}
    client = socket.create_connection(("127.0.0.1", bridge.port), timeout=10)
    client_port = client.getsockname()[1]
    env = php_environment(bridge.url("/env/path?x=1"), sock=client, additional_headers=headers,
                          subprotocols=["chat"], user_agent_header=None)

    assert env["WSS_ENABLED"] == "1"
    assert len(env["WSS_CONNECTION_ID"]) == 36 and env["WSS_CONNECTION_ID"].count("-") == 4
    assert env["WSS_CLIENT_IP"] == "127.0.0.1"
    assert env["WSS_CLIENT_PORT"] == str(client_port)
    assert env["WSS_SERVER_HOST"] == "127.0.0.1"
    assert env["WSS_SERVER_PORT"] == str(bridge.port)
    assert env["WSS_REQUEST_URI"] == "/env/path?x=1&do=env"
    assert env["WSS_REQUEST_PATH"] == "/env/path"
    assert env["WSS_REQUEST_QUERY"] == "x=1&do=env"
    assert env["WSS_SEC_WEBSOCKET_PROTOCOL"] == "chat"
    assert env["WSS_SEC_WEBSOCKET_VERSION"] == "13"
    assert env["WSS_ORIGIN"] == "http://example.test"
    assert env["WSS_USER_AGENT"] == "env-test/1.0"
    assert env["WSS_HOST"] == "127.0.0.1:%d" % bridge.port
    assert env["WSS_X_FORWARDED_FOR"] == "203.0.113.9"
    assert env["WSS_X_REAL_IP"] == "203.0.113.10"
    assert env["WSS_TCP_HOST"] == "127.0.0.1"
    assert env["WSS_TCP_PORT"] == str(bridge.tcp_port) and bridge.tcp_port > 0
    headers_seen = json.loads(env["WSS_REQUEST_HEADERS"])
    assert headers_seen["x-custom"] == "ünïcode"
    assert headers_seen["origin"] == "http://example.test"
    assert headers_seen["upgrade"] == "websocket"
    assert all(name == name.lower() for name in headers_seen)
    assert env["GREENBRIDGE_TEST_INHERITED"] == "yes"
    assert not [name for name in env if name.startswith("WSS_CONFIG_")]


def test_header_variables_absent_when_header_not_sent(start_bridge):
    bridge = start_bridge()
    env = php_environment(bridge.url(), user_agent_header=None, origin=None)
    for name in ("WSS_ORIGIN", "WSS_USER_AGENT", "WSS_X_FORWARDED_FOR", "WSS_X_REAL_IP",
                 "WSS_SEC_WEBSOCKET_PROTOCOL"):
        assert name not in env
    assert php_environment(bridge.url("/plain"))["WSS_REQUEST_QUERY"] == "do=env"


# -- HTTP answers before any process starts ---------------------------------

def test_plain_http_request_gets_426(start_bridge):
    bridge = start_bridge()
    response = raw_http(bridge.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert response.startswith("HTTP/1.1 426 ")
    assert "upgrade: websocket" in response.lower()
    assert_no_other_connection_ran(bridge)


# Each malformed upgrade and its answer: test_upgrade.py; here a refused upgrade and a
# header PHP could not be given (test_php_environment.py), through a server.
@pytest.mark.parametrize("request_bytes", [
    upgrade_request(key=b"not-a-valid-key"),
    upgrade_request(extra=b"X-Bad: a\x00b\r\n"),
], ids=["bad-key", "nul-in-header"])
def test_malformed_upgrade_gets_400(start_bridge, request_bytes):
    bridge = start_bridge()
    response = raw_http(bridge.port, request_bytes)
    assert response.startswith("HTTP/1.1 400 ") or response.startswith("HTTP/1.0 400 ")
    assert_no_other_connection_ran(bridge)  # still serving; the refused request started no PHP


def test_head_answers_have_headers_and_no_body(start_bridge):
    bridge = start_bridge()
    assert_head_matches_get(bridge.port, "/", 426)
    refused = raw_http(bridge.port, upgrade_request().replace(b"GET ", b"HEAD "))
    (status, headers), body = split_response_head(refused.encode("latin-1"))
    assert status.startswith("HTTP/1.1 400 ") and int(headers["content-length"]) > 0
    assert body == b""
    bridge.assert_serves()


def test_unsupported_websocket_version_gets_426(start_bridge):
    bridge = start_bridge()
    response = raw_http(bridge.port, upgrade_request().replace(b"Version: 13", b"Version: 8"))
    assert response.startswith("HTTP/1.1 426 ")
    assert "sec-websocket-version: 13" in response.lower()


@pytest.mark.parametrize("flag", ["--max-connections", "--max-processes"])
def test_limits_answer_503_with_retry_after(start_bridge, flag):
    bridge = start_bridge(flag, "2")
    with connect(bridge.url()) as first, connect(bridge.url()) as second:
        for ws in (first, second):
            ws.send(b"hi")
            assert ws.recv(timeout=10) == b"hi"
        with pytest.raises(InvalidStatus) as refused:
            connect(bridge.url())
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"]
        assert len(bridge.php_processes()) == 2
    # Slots come back once connections end.
    bridge.wait_no_php()
    with connect(bridge.url()) as ws:
        ws.send(b"again")
        assert ws.recv(timeout=10) == b"again"
    assert len(access_lines(stopped_log(bridge))) == 3  # the refused one never ran


# -- close codes ------------------------------------------------------------

def test_php_exit_zero_closes_1000(start_bridge):
    bridge = start_bridge()
    with connect(bridge.url("/?do=exit&code=0")) as ws:
        ws.send(b"bye")
        assert closed_with(ws)[0] == 1000


def test_php_closing_its_socket_closes_1000(start_bridge):
    bridge = start_bridge()
    with connect(bridge.url("/?do=close_socket")) as ws:
        ws.send(b"bye")
        assert closed_with(ws)[0] == 1000


def test_php_exit_nonzero_closes_1011(start_bridge):
    bridge = start_bridge()
    with connect(bridge.url("/?do=exit&code=3")) as ws:
        ws.send(b"bye")
        code, reason = closed_with(ws)
    assert code == 1011
    assert "exit status 3" in reason
    bridge.wait_for_log(r"close=1011 .*php=exit status 3")


def test_php_crash_closes_1011(start_bridge):
    bridge = start_bridge()
    with connect(bridge.url("/?do=crash")) as ws:
        ws.send(b"die")
        code, reason = closed_with(ws)
    assert code == 1011
    assert "SIGKILL" in reason


def test_oversized_client_message_closes_1009(start_bridge):
    bridge = start_bridge("--max-payload-size", "1000")
    with connect(bridge.url()) as ws:
        ws.send(b"x" * 1000)
        assert receive_bytes(ws, 1000) == b"x" * 1000
        ws.send(b"x" * 1001)
        assert closed_with(ws)[0] == 1009
    bridge.wait_no_php()


def test_connection_timeout_closes_idle_connection_1001(start_bridge):
    bridge = start_bridge("--connection-timeout", "1.5")
    with connect(bridge.url()) as ws:
        for _ in range(8):  # active for 2 s at least, past the 1.5 s timeout: kept open
            ws.send(b"still here")
            assert ws.recv(timeout=10) == b"still here"
            time.sleep(0.25)  # the client's pace (part of the scenario, not a wait)
        code, reason = closed_with(ws)
    assert code == 1001
    assert "connection timeout" in reason


def test_php_timeout_closes_1001(start_bridge):
    bridge = start_bridge("--php-timeout", "1")
    with connect(bridge.url()) as ws:
        started = time.monotonic()
        code, reason = closed_with(ws)
    assert code == 1001
    assert "PHP timeout" in reason
    assert time.monotonic() - started < 8
    bridge.wait_no_php()


def test_client_close_code_is_logged(start_bridge):
    bridge = start_bridge()
    with connect(bridge.url("/logged")) as ws:
        ws.send(b"abc")
        ws.recv(timeout=10)
        ws.close(4001, "done here")
    bridge.wait_for_log(r"/logged [\d.]+s in=3 out=3 close=4001 'done here'")
    bridge.wait_no_php()


# -- PHP that misbehaves before connecting back -----------------------------

def test_php_that_never_connects_back_gets_1011(start_bridge):
    bridge = start_bridge("--php-connect-timeout", "1", "--php-kill-grace", "0.2")
    with connect(bridge.url("/?do=never_connect")) as ws:
        code, reason = closed_with(ws)
    assert code == 1011
    assert "did not connect back" in reason
    bridge.wait_no_php(timeout=5)


def test_php_exiting_before_connect_back_is_retried_then_1011(start_bridge, tmp_path):
    attempts_file = tmp_path / "attempts"
    bridge = start_bridge("--php-connect-retries", "2")
    with connect(bridge.url("/?do=exit_early&file=%s" % attempts_file)) as ws:
        code, _ = closed_with(ws)
    assert code == 1011
    assert attempts_file.read_text().count("attempt") == 3
    bridge.wait_for_log("attempt 3 of 3")  # the log reader may lag behind the close


def test_missing_php_at_spawn_time_is_retried_then_1011(start_bridge, tmp_path):
    php = tmp_path / "php"
    php.symlink_to("/usr/bin/php")
    bridge = start_bridge("--php-connect-retries", "1", php=str(php))
    php.unlink()  # gone after start-up checks passed
    with connect(bridge.url()) as ws:
        assert closed_with(ws)[0] == 1011
    bridge.wait_for_log(r"spawning PHP failed \(attempt 2 of 2\)")


# A newcomer's scripts that never connect back: (script, --php-connect-timeout, what the
# one warning line must hold). PHP's messages as PHP 8 writes them to stderr (log_errors).
SCRIPTS_THAT_DO_NOT_CONNECT_BACK = {
    "syntax error": ("<?php\necho 'a'\n$x = ;\n", "30", [
        "PHP ended before connecting back (exit status 255; attempt 2 of 2): "
        "PHP Parse error:  syntax error, ", " in {script} on line 3"]),
    "require of a missing library": ("<?php\nrequire '/path/to/Greenbridge.php';\n", "30", [
        "PHP ended before connecting back (exit status 255; attempt 2 of 2): PHP Fatal error:  "
        "Uncaught Error: Failed opening required '/path/to/Greenbridge.php'",
        " in {script}:2 (require getenv('WSS_PHP_LIB') finds the library)"]),
    "composer install not run": ("<?php\nrequire __DIR__ . '/vendor/autoload.php';\n", "30", [
        "PHP Fatal error:  Uncaught Error: Failed opening required '{script.parent}/vendor/"
        "autoload.php'", " (composer install in the script's project makes it)"]),
    "exit before connecting back": ("<?php\nexit(3);\n", "30", [
        "PHP ended before connecting back (exit status 3; attempt 2 of 2): no error message; "
        "a script must first connect to WSS_TCP_HOST:WSS_TCP_PORT and send WSS_CONNECTION_ID "
        "and a newline (Greenbridge\\Connection::connect() does)"]),
    "no connect back in time": ("<?php\nsleep(60);\n", "1", [
        "PHP did not connect back within 1s; a script must first connect to "
        "WSS_TCP_HOST:WSS_TCP_PORT and send WSS_CONNECTION_ID and a newline "
        "(Greenbridge\\Connection::connect() does)"]),
}


@pytest.mark.parametrize("mistake", SCRIPTS_THAT_DO_NOT_CONNECT_BACK)
def test_script_that_does_not_connect_back_gets_1011_and_one_line_saying_why(start_bridge,
                                                                             tmp_path, mistake):
    source, connect_timeout, expected = SCRIPTS_THAT_DO_NOT_CONNECT_BACK[mistake]
    script = tmp_path / "handler.php"
    script.write_text(source)
    bridge = start_bridge("--route", "/mistake=%s" % script, "--php-connect-retries", "1",
                          "--php-connect-timeout", connect_timeout, "--php-kill-grace", "0.2")
    with connect(bridge.url("/mistake")) as ws:
        assert closed_with(ws)[0] == 1011
    bridge.assert_serves()  # the other paths' script still runs
    log = stopped_log(bridge)
    lines = [line for line in log.splitlines() if "WARNING greenbridge.connection" in line]
    assert len(lines) == 1, log  # one line for the connection, not one per attempt
    for part in expected:
        assert part.format(script=script) in lines[0], lines[0]
    assert "Traceback" not in log


# -- processes --------------------------------------------------------------

def test_no_php_process_survives_its_connection(start_bridge):
    bridge = start_bridge()
    with connect(bridge.url("/?do=child")) as ws:
        child_pid = int(ws.recv(timeout=10))
        assert psutil.pid_exists(child_pid)
        php = bridge.php_processes()
        assert len([p for p in php if p.name().startswith("php")]) == 1
    bridge.wait_no_php()
    wait_until(lambda: not psutil.pid_exists(child_pid), timeout=5,
               what="the end of the script's child")


def test_php_ignoring_sigterm_is_killed_after_grace(start_bridge):
    bridge = start_bridge("--php-kill-grace", "0.3")
    with connect(bridge.url("/?do=ignore_term")) as ws:
        pid = int(ws.recv(timeout=10))
    bridge.wait_for_log(r"php=killed by SIGKILL")
    assert not psutil.pid_exists(pid)


def test_php_output_is_relayed_to_the_log(start_bridge):
    bridge = start_bridge()
    # PHP writes a 10 MiB stderr line before it connects back: a relay that
    # blocked it would show here as no echo.
    with connect(bridge.url("/?do=output&long=%d" % (10 * 1024 * 1024))) as ws:
        ws.send(b"ping")
        assert ws.recv(timeout=10) == b"ping"
    match = bridge.wait_for_log(r"WARNING greenbridge.php: \[([0-9a-f-]{36})\] stderr: a line on stderr")
    bridge.wait_for_log(r"INFO greenbridge.php: \[%s\] stdout: a line on stdout" % match.group(1))
    long_line = bridge.wait_for_log(r"stderr: (x+)\.\.\. \[(\d+) more bytes\]")
    assert len(long_line.group(1)) < 10000
    assert len(long_line.group(1)) + int(long_line.group(2)) == 10 * 1024 * 1024
    bridge.wait_for_log(r"INFO greenbridge.php: \[%s\] stdout: last words, no newline$"
                        % match.group(1))


# -- back-pressure ----------------------------------------------------------

def test_client_that_stops_reading_blocks_php_not_the_bridge_memory(start_bridge):
    bridge = start_bridge()
    server = psutil.Process(bridge.process.pid)
    chunks = 1600  # 100 MiB
    with connect(bridge.url("/?do=flood&tell_blocked=1&chunks=%d" % chunks), max_size=None,
                 max_queue=1, ping_interval=None) as ws:
        first = ws.recv(timeout=10)
        rss_before = server.memory_info().rss
        # PHP keeps writing, nobody reads: PHP says when its socket took nothing for 1 s.
        ending = bridge.wait_for_log(r"stderr: (PHP blocked for 1s|flood done)", timeout=30)
        assert ending.group(1) != "flood done", "PHP was never blocked"
        rss_stalled = server.memory_info().rss
        rest = receive_bytes(ws, chunks * 65536 - len(first), timeout=30)
    assert len(first) + len(rest) == chunks * 65536  # nothing lost
    assert set(rest) == {ord("z")}
    assert rss_stalled - rss_before < 32 * 1024 * 1024


def test_php_that_stops_reading_bounds_bridge_memory(start_bridge):
    bridge = start_bridge()
    server = psutil.Process(bridge.process.pid)
    rss_before = server.memory_info().rss
    with connect(bridge.url("/?do=sink&seconds=120"), max_size=None, ping_interval=None,
                 close_timeout=1) as ws:
        sent = 0
        last_sent = time.monotonic()
        sender_done = threading.Event()

        def send_forever():
            nonlocal sent, last_sent
            try:
                while sent < 100 * 1024 * 1024:
                    ws.send(b"y" * 1024 * 1024)
                    sent += 1024 * 1024
                    last_sent = time.monotonic()
            except (ConnectionClosed, OSError):
                pass  # the end of the test cut the connection
            finally:
                sender_done.set()

        thread = threading.Thread(target=send_forever, daemon=True)
        thread.start()
        # Blocked: some sent, no send done for a second, and the bridge leaves what came
        # unread (a sender merely slowed by a busy machine is not blocked: it would be read).
        wait_until(lambda: sender_done.is_set() or (sent and time.monotonic() - last_sent > 1
                                                    and server_unread_bytes(ws.socket)),
                   timeout=30, what="the sender blocked or done")
        assert not sender_done.is_set(), "the client was never blocked"
        assert sent < 64 * 1024 * 1024
        assert server.memory_info().rss - rss_before < 40 * 1024 * 1024
        ws.socket.shutdown(socket.SHUT_RDWR)  # the blocked send cannot close politely
        thread.join(15)


# -- back-connection port ---------------------------------------------------

@pytest.mark.parametrize("garbage,refusal", [
    (b"hello\n", r"refused: malformed ID b'hello'"),
    (b"\x00\xff" * 100, r"refused: ID line longer than 128 bytes"),
    (b"x" * 500, r"refused: ID line longer than 128 bytes"),
    (b"12345678-1234-4234-8234-123456789abc\n",
     r"refused: unknown or already used ID 12345678-1234-4234-8234-123456789abc"),
    (b"", r"refused: closed before sending an ID line"),  # connected, then shut its side
], ids=["malformed", "binary", "long", "unknown-id", "nothing"])
def test_garbage_on_back_connection_port_is_refused(start_bridge, garbage, refusal):
    """Each refusal is the first of its server, so its line is not held back (one a second)."""
    bridge = start_bridge()
    with socket.create_connection(("127.0.0.1", bridge.tcp_port), timeout=10) as sock:
        sock.sendall(garbage)
        if not garbage:
            sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # closed by the bridge
        port = sock.getsockname()[1]
    bridge.wait_for_log(r"back-connection from 127\.0\.0\.1:%d %s" % (port, re.escape(refusal)))
    bridge.assert_serves()


# -- shutdown ---------------------------------------------------------------

def test_sigterm_closes_open_connections_with_1001_and_exits_0(start_bridge):
    bridge = start_bridge("--shutdown-timeout", "0.5")
    with connect(bridge.url()) as ws:
        ws.send(b"x")
        ws.recv(timeout=10)
        php = bridge.php_processes()
        assert len(php) == 1
        bridge.signal(signal.SIGTERM)
        code, reason = closed_with(ws)
    assert code == 1001
    assert "shutting down" in reason
    assert bridge.process.wait(10) == 0
    assert not [p for p in php if p.is_running()]


def test_connections_that_end_during_shutdown_are_not_cut(start_bridge):
    bridge = start_bridge("--shutdown-timeout", "10")
    with connect(bridge.url()) as ws:
        bridge.signal(signal.SIGTERM)
        bridge.wait_for_log("waiting up to 10s for 1 connection")
        ws.send(b"still served while draining")
        assert ws.recv(timeout=10) == b"still served while draining"
    assert bridge.process.wait(10) == 0


def test_second_signal_exits_at_once_and_kills_php(start_bridge):
    bridge = start_bridge("--shutdown-timeout", "60")
    with connect(bridge.url("/?do=ignore_term")) as ws:
        pid = int(ws.recv(timeout=10))
        bridge.signal(signal.SIGINT)
        bridge.wait_for_log("waiting up to 60s")
        bridge.signal(signal.SIGINT)
        assert bridge.process.wait(10) != 0
    wait_until(lambda: not psutil.pid_exists(pid), 10, "PHP (pid %d) killed" % pid)
