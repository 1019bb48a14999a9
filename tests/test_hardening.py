"""The limits that keep abusive clients cheap: handshake time, size and count, per-address
connections, descriptors, memory per connection; and what the server tells operators about them."""

import os
import resource
import select
import signal
import socket
import ssl
import struct
import time

import psutil
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from support import (SCENARIO_PHP, Bridge, RawClient, access_lines, assert_no_other_connection_ran,
                     client_context, frame, half_sent_handshake, mask_payload, raw_http,
                     read_until_closed, readme_snippet, stopped_log, upgrade_request, wait_closed,
                     wait_until, wait_workers)

MiB = 1024 * 1024


def test_slow_handshake_is_dropped_after_the_handshake_timeout(start_bridge):
    bridge = start_bridge("--handshake-timeout", "1")
    slow = half_sent_handshake(bridge.port)
    slow.settimeout(30)
    assert slow.recv(4096) == b""  # the server hung up
    slow.close()
    bridge.wait_for_log(r"client 127\.0\.0\.1:\d+: no complete upgrade request within 1s")
    assert_no_other_connection_ran(bridge)


def test_handshake_timeout_does_not_cut_open_connections(start_bridge):
    bridge = start_bridge("--handshake-timeout", "1")
    with connect(bridge.url()) as ws:
        # A handshake begun after this connection's is cut: its time is up for both.
        slow = half_sent_handshake(bridge.port)
        assert slow.recv(4096) == b""
        slow.close()
        ws.send(b"after the handshake timeout")
        assert ws.recv(timeout=10) == b"after the handshake timeout"


def test_request_over_16_kib_gets_431(start_bridge):
    bridge = start_bridge()
    fits = upgrade_request(extra=b"X-Padding: " + b"p" * 15000 + b"\r\n")
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as sock:
        sock.sendall(fits)
        assert sock.recv(12) == b"HTTP/1.1 101"
    too_large = upgrade_request(extra=b"".join(b"X-Padding-%d: %s\r\n" % (n, b"p" * 4000)
                                                for n in range(5)))
    response = raw_http(bridge.port, too_large)
    assert response.startswith("HTTP/1.1 431 ")
    bridge.wait_for_log(r"bad request from 127\.0\.0\.1:\d+: request line and headers over 16384")
    bridge.assert_serves()
    assert "Traceback" not in stopped_log(bridge)


def test_too_many_headers_is_one_line_not_a_traceback(start_bridge):
    bridge = start_bridge()
    response = raw_http(bridge.port, upgrade_request(
        extra=b"".join(b"X-H%d: v\r\n" % n for n in range(150))))
    assert response.startswith("HTTP/1.1 400 ")
    bridge.wait_for_log(r"bad request from .*more than 100 headers")
    bridge.assert_serves()
    assert "Traceback" not in stopped_log(bridge)


def test_slowloris_crowd_does_not_keep_out_a_real_client(start_bridge):
    """100 half-sent handshakes, past a cap of 20: the oldest go, a real client still echoes."""
    bridge = start_bridge("--max-pending-handshakes", "20")
    crowd = [half_sent_handshake(bridge.port) for _ in range(100)]
    try:
        bridge.assert_serves()
        bridge.wait_for_log(r"20 handshakes pending: dropping the oldest")
        wait_closed(crowd, 10, left_open=20)
    finally:
        for sock in crowd:
            sock.close()
    log = stopped_log(bridge)
    assert len(access_lines(log)) == 1  # only assert_serves' connection ran
    assert "Traceback" not in log


def test_slowloris_under_the_cap_still_lets_real_clients_in(start_bridge):
    bridge = start_bridge()  # default cap (128) above the crowd
    crowd = [half_sent_handshake(bridge.port) for _ in range(100)]
    try:
        for _ in range(3):
            bridge.assert_serves()
    finally:
        for sock in crowd:
            sock.close()


def test_connections_per_address_are_limited(start_bridge):
    bridge = start_bridge("--max-connections-per-ip", "2")

    def connect_from(source):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", bridge.port))
        return connect(bridge.url(), sock=sock)

    with connect_from("127.0.0.1") as first, connect_from("127.0.0.1") as second:
        for ws in (first, second):  # both PHP processes are up
            ws.send(b"hi")
            assert ws.recv(timeout=10) == b"hi"
        with pytest.raises(InvalidStatus) as refused:
            connect_from("127.0.0.1")
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"]
        assert b"per address (2)" in refused.value.response.body
        assert len(bridge.php_processes()) == 2
        # Another address is counted on its own.
        with connect_from("127.0.0.2") as other:
            other.send(b"other address")
            assert other.recv(timeout=10) == b"other address"
    bridge.wait_no_php()
    with connect_from("127.0.0.1") as again:
        again.send(b"slot came back")
        assert again.recv(timeout=10) == b"slot came back"
    assert len(access_lines(stopped_log(bridge))) == 4  # the refused one never ran


def test_open_files_limit_is_raised_and_logged(start_bridge):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    bridge = start_bridge()
    server_soft, server_hard = psutil.Process(bridge.process.pid).rlimit(resource.RLIMIT_NOFILE)
    assert server_soft == server_hard == hard
    bridge.wait_for_log(r"open files limit: %d \(hard limit %d\)" % (hard, hard))


def test_running_out_of_descriptors_pauses_accepting_and_recovers(start_bridge):
    bridge = start_bridge()
    server = psutil.Process(bridge.process.pid)
    idle_limit = server.rlimit(resource.RLIMIT_NOFILE)
    server.rlimit(resource.RLIMIT_NOFILE, (server.num_fds() + 10, idle_limit[1]))
    started = time.monotonic()
    crowd = []
    try:
        for _ in range(40):  # more than the server can hold: the rest wait in the backlog
            crowd.append(half_sent_handshake(bridge.port))
        bridge.wait_for_log(r"accept failed: Too many open files; pausing accepts")
        # It keeps failing accept(): one line a second at most, the others counted, no spinning.
        held_back = bridge.wait_for_log(
            r"greenbridge\.server: accept failed: .* \((\d+) more like it not logged\)")
        assert bridge.process.poll() is None
        seconds = time.monotonic() - started
        failures = [line for line in bridge.lines if "greenbridge.server: accept failed" in line]
        assert 2 <= len(failures) <= seconds + 1
        # One attempt each ACCEPT_BACKOFF (0.1 s), twice over for slack.
        assert int(held_back.group(1)) <= 20 * seconds
    finally:
        for sock in crowd:
            sock.close()
    server.rlimit(resource.RLIMIT_NOFILE, idle_limit)
    bridge.assert_serves()
    assert "Traceback" not in stopped_log(bridge)


def test_back_connection_listener_off_loopback_is_warned_about(start_bridge):
    bridge = start_bridge("--tcp-bind", "0.0.0.0")
    bridge.wait_for_log(r"WARNING .*back-connection listener is on 0\.0\.0\.0, not loopback")
    quiet = start_bridge()
    assert "not loopback" not in stopped_log(quiet)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_listening_beyond_loopback_without_an_origin_check_is_warned_about_once(
        start_bridge, workers):
    # Clients still connect to 127.0.0.1 only (assert_serves).
    bridge = start_bridge("-H", "0.0.0.0", "--workers", workers)
    if workers == "2":
        wait_workers(bridge, [1, 2])  # each has logged its start by now
    bridge.assert_serves()
    warnings = [line for line in bridge.lines if "without an origin check" in line]
    # The line as README.rst prints it (it listens on 0.0.0.0 too).
    assert len(warnings) == 1 and warnings[0].endswith(readme_snippet("open-door-warning")), \
        bridge.log


# Which addresses are loopback (all of 127.0.0.0/8, ::1...): test_listening.py.
@pytest.mark.parametrize("flags", [
    ["-H", "0.0.0.0", "--allow-origin", "https://app.example.com"],
    ["-H", "0.0.0.0", "--same-origin"],
    ["-H", "127.0.0.1"],
    ["-H", "localhost"],
])
def test_no_open_door_warning_with_an_origin_check_or_on_loopback(start_bridge, flags):
    bridge = start_bridge(*flags)
    assert "without an origin check" not in stopped_log(bridge)


def test_no_open_door_warning_on_ipv6_loopback():
    bridge = Bridge(["-e", "php", "-s", SCENARIO_PHP, "-H", "::1", "-P", "0"])
    try:
        bridge.wait_for_log(r"listening on ws://::1:\d+")
        assert "without an origin check" not in stopped_log(bridge)
    finally:
        bridge.kill()


def test_sigusr1_logs_what_the_server_holds(start_bridge):
    bridge = start_bridge()
    with connect(bridge.url()) as ws:
        ws.send(b"x")
        ws.recv(timeout=10)
        bridge.signal(signal.SIGUSR1)
        match = bridge.wait_for_log(r"status: 1 connections, 0 pending handshakes, "
                                    r"(\d+) greenlets, (\d+) open descriptors")
    assert int(match.group(1)) >= 4  # hub, server, connection, two pumps...
    assert int(match.group(2)) > 0


def test_sigusr1_to_the_arbiter_reaches_every_worker(start_bridge):
    bridge = start_bridge("--workers", "2")
    wait_workers(bridge, [1, 2])
    bridge.signal(signal.SIGUSR1)
    wait_until(lambda: bridge.log.count("status: ") >= 2, timeout=20,
               what="a status line from each worker")
    assert bridge.log.count("status: 0 connections, 0 pending handshakes") == 2
    assert bridge.process.poll() is None
    bridge.assert_serves()


# -- what a connection may do before its 101 -----------------------------------------

BODY_HOLDERS = (
    # A plain GET announcing a body it never sends (answered 426).
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n",
    # POSTs with a body that never comes, by length and chunked.
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\npart of it",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nsome",
)


def silent_after(port, request):
    """A client that sends `request` whole and then nothing, reading nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(request)
    return sock


def test_upgrade_request_with_a_body_gets_400_at_once(start_bridge):
    bridge = start_bridge("--handshake-timeout", "60")
    for body_header in (b"Content-Length: 1000000000\r\n", b"Transfer-Encoding: chunked\r\n"):
        with silent_after(bridge.port, upgrade_request(extra=body_header)) as sock:
            # Answered and closed without waiting for the body (or for the 60 s budget).
            assert read_until_closed(sock).startswith(b"HTTP/1.1 400 ")
    bridge.wait_for_log(r"bad request from 127\.0\.0\.1:\d+: WebSocket upgrade request with a body")
    log = assert_no_other_connection_ran(bridge)
    assert "Traceback" not in log


def test_unread_request_bodies_are_closed_at_the_handshake_timeout(start_bridge):
    bridge = start_bridge("--handshake-timeout", "2")
    started = time.monotonic()
    crowd = [silent_after(bridge.port, BODY_HOLDERS[n % 3]) for n in range(30)]
    try:
        bridge.assert_serves()
        wait_closed(crowd, timeout=2 + 8)
        print("30 body holders closed %.1fs after the first connected" % (time.monotonic() - started))
    finally:
        for sock in crowd:
            sock.close()
    bridge.wait_for_log(r"client 127\.0\.0\.1:\d+: no complete upgrade request within 2s")
    bridge.assert_serves()
    assert "Traceback" not in stopped_log(bridge)


def test_unread_request_bodies_count_against_the_pending_cap(start_bridge):
    bridge = start_bridge("--handshake-timeout", "60", "--max-pending-handshakes", "10")
    crowd = [silent_after(bridge.port, BODY_HOLDERS[n % 3]) for n in range(30)]
    try:
        bridge.assert_serves()
        # The 20 oldest made way for newer clients, long before the 60 s budget.
        wait_closed(crowd[:20], timeout=20)
        bridge.wait_for_log(r"10 handshakes pending: dropping the oldest")
    finally:
        for sock in crowd:
            sock.close()
    assert "Traceback" not in stopped_log(bridge)


def test_dev_console_keeps_alive_within_the_handshake_budget(start_bridge):
    bridge = start_bridge("--dev-console", "--handshake-timeout", "3")
    page_request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=20) as sock:
        reader = sock.makefile("rb")
        for _ in range(2):  # two pages on one connection
            sock.sendall(page_request)
            assert reader.readline() == b"HTTP/1.1 200 OK\r\n"
            headers = {}
            for line in iter(reader.readline, b"\r\n"):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.lower()] = value.strip()
            assert b"<html" in reader.read(int(headers["content-length"])).lower()
        # A POST whose body never comes: answered, then closed within the budget.
        sock.sendall(BODY_HOLDERS[1])
        assert reader.readline() == b"HTTP/1.1 405 Method Not Allowed\r\n"
        wait_closed([sock], timeout=3 + 8)
    assert "Traceback" not in stopped_log(bridge)


def test_folded_header_gets_400_and_one_line(start_bridge):
    bridge = start_bridge()
    folded = upgrade_request(extra=b"Sec-WebSocket-Protocol: chat\r\n v1\r\n")
    assert raw_http(bridge.port, folded).startswith("HTTP/1.1 400 ")
    bridge.wait_for_log(r"bad request from 127\.0\.0\.1:\d+: obsolete line folding in header "
                        r"'Sec-WebSocket-Protocol'")
    # Whitespace before the first header line is the same thing (RFC 9112 2.2).
    indented = upgrade_request().replace(b"\r\nHost:", b"\r\n Host:", 1)
    assert raw_http(bridge.port, indented).startswith("HTTP/1.1 400 ")
    bridge.wait_for_log(r"bad request from 127\.0\.0\.1:\d+: malformed header section")
    log = assert_no_other_connection_ran(bridge)
    assert "Traceback" not in log


def tls_handshake_slowly_then_http_slowly(port, tls_seconds, byte_interval):
    """Seconds from connect until the server closed, for a client that takes `tls_seconds`
    over its TLS handshake (its first flight in dribbles) and then sends an upgrade
    request over TLS a byte at a time."""
    tcp = socket.create_connection(("127.0.0.1", port), timeout=30)
    started = time.monotonic()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")

    def closed_after(wait):
        """Wait up to `wait` s for the server; True once it closed the connection."""
        while select.select([tcp], [], [], wait)[0]:
            try:
                data = tcp.recv(65536)
            except ConnectionResetError:
                return True
            if not data:
                return True
            incoming.write(data)  # handshake records, session tickets
            wait = 0
        return False

    try:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = outgoing.read()
        pieces = 10
        for number in range(pieces):
            tcp.sendall(hello[number * len(hello) // pieces:(number + 1) * len(hello) // pieces])
            if closed_after(tls_seconds / pieces):
                return time.monotonic() - started
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                tcp.sendall(outgoing.read())
                if closed_after(30):
                    return time.monotonic() - started
        tcp.sendall(outgoing.read())
        for byte in upgrade_request():
            tls.write(bytes([byte]))
            try:
                tcp.sendall(outgoing.read())
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
            if closed_after(byte_interval):
                return time.monotonic() - started
        raise AssertionError("the server took the whole slow upgrade request")
    finally:
        tcp.close()


def test_tls_and_upgrade_share_one_handshake_budget(start_bridge):
    bridge = start_bridge("--tls-mode", "internal", "--handshake-timeout", "4")
    seconds = tls_handshake_slowly_then_http_slowly(bridge.port, tls_seconds=3,
                                                    byte_interval=0.1)
    print("slow TLS + slow HTTP client closed after %.1fs (--handshake-timeout 4)" % seconds)
    # Two budgets would let it go on to 3 + 4 s.
    assert seconds < 4 + 2
    bridge.wait_for_log(r"client 127\.0\.0\.1:\d+: no complete upgrade request within 4s$")
    assert "Traceback" not in stopped_log(bridge)


# -- memory the client never sends --------------------------------------------------

def rss(bridge):
    return psutil.Process(bridge.process.pid).memory_info().rss


def echoing_clients(bridge, count):
    """`count` raw clients whose PHP is up (each had a message echoed)."""
    clients = [RawClient(bridge.port) for _ in range(count)]
    for client in clients:
        client.sock.sendall(frame(0x2, b"up"))
        assert client.read_frame() == (0x2, b"up")
    return clients


def test_payloads_announced_but_not_sent_cost_no_memory(start_bridge):
    """Ten headers announcing 16 MiB (the default limit), two payload bytes each: the server
    holds what arrived, not what was announced; one of them then sends the rest, echoed whole."""
    bridge = start_bridge()
    size = 16 * MiB
    key = os.urandom(4)
    payload = os.urandom(size)
    masked = mask_payload(payload, key)
    header = struct.pack("!BBQ", 0x82, 0x80 | 127, size) + key
    clients = echoing_clients(bridge, 10)
    try:
        before = rss(bridge)
        for client in clients:
            client.sock.sendall(header + masked[:1])
            client.wait_read_by_server()
            client.sock.sendall(masked[1:2])  # read into the payload's buffer, so it exists
            client.wait_read_by_server()
        grown = rss(bridge) - before
        print("server RSS after 10 announced 16 MiB payloads: +%.1f MiB" % (grown / MiB))
        assert grown < 32 * MiB
        sender = clients[0]
        sender.sock.sendall(masked[2:])
        received = b""
        while len(received) < size:
            opcode, data = sender.read_frame()
            assert opcode == 0x2
            received += data
        assert received == payload
    finally:
        for client in clients:
            client.close()
    bridge.assert_serves()
    assert "Traceback" not in stopped_log(bridge)


def test_fragment_floods_are_closed_with_1009(start_bridge):
    """Continuation frames that add nothing keep no message open for ever: empty ones count
    their headers against the size limit. (That a message has 65,536 frames at most, and
    the limits' exact bounds, are checked on the protocol core: test_protocol.py.)"""
    bridge = start_bridge("--max-payload-size", "1024")
    client = RawClient(bridge.port)
    flood = frame(0x2, b"", fin=False) + frame(0x0, b"", fin=False) * 200_000
    try:
        assert client.send_until_closed(flood) == 1009
    finally:
        client.close()
    bridge.wait_for_log(r"close=1009 'message over 1024 bytes \(frame headers included\)'")
    bridge.assert_serves()
    assert "Traceback" not in stopped_log(bridge)


def test_a_fragmented_message_must_end_within_the_message_timeout(start_bridge):
    """A message kept open by an empty continuation frame every 0.1 s: closed with 1008."""
    bridge = start_bridge("--message-timeout", "1")
    client = RawClient(bridge.port)
    try:
        client.sock.sendall(frame(0x2, b"up"))  # PHP is up: the timeout runs from the next frame
        assert client.read_frame() == (0x2, b"up")
        client.sock.sendall(frame(0x2, b"never ends", fin=False))
        opened = time.monotonic()

        def answered_while_continuing():
            if select.select([client.sock], [], [], 0.1)[0]:
                return True
            client.sock.sendall(frame(0x0, b"", fin=False))
            return False
        wait_until(answered_while_continuing, 30, "the server closing the never-ending message")
        assert client.read_close_code() == 1008
        print("closed %.2f s after the message opened" % (time.monotonic() - opened))
    finally:
        client.close()
    bridge.wait_for_log(r"close=1008 'message not complete within 1s'")
    bridge.assert_serves()


# -- --max-write-buffer-size ------------------------------------------------------------

def test_a_message_over_max_write_buffer_size_is_refused_not_held(start_bridge):
    """PHP never reads; eight clients send a 12 MiB message each, over a 1 MiB write buffer."""
    bridge = start_bridge("--max-write-buffer-size", str(MiB))
    clients = [RawClient(bridge.port, "/?do=sink&seconds=120") for _ in range(8)]
    try:
        before = rss(bridge)
        codes = [client.send_until_closed(frame(0x2, b"m" * 12 * MiB)) for client in clients]
        grown = rss(bridge) - before
    finally:
        for client in clients:
            client.close()
    print("server RSS after 8 x 12 MiB to PHP that never reads: +%.1f MiB" % (grown / MiB))
    assert codes == [1009] * 8
    assert grown < 24 * MiB
    bridge.wait_for_log(r"close=1009 'message over 1048576 bytes'")
    bridge.assert_serves()


def test_a_line_php_writes_over_max_write_buffer_size_is_refused(start_bridge):
    """PHP writes 2 MiB without a newline in line mode: 1009, not 2 MiB held."""
    bridge = start_bridge("--route", "/line=%s,mode=line" % SCENARIO_PHP,
                          "--max-write-buffer-size", str(MiB))
    client = RawClient(bridge.port, "/line?do=flood&chunks=32")
    try:
        assert client.read_close_code() == 1009
    finally:
        client.close()
    bridge.wait_for_log(r"PHP wrote a line over 1048576 bytes")
    bridge.assert_serves()
