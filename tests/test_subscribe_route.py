"""--subscribe-route: receive-only connections with a token, no PHP process, through a real
bridge and real sockets (python-websockets, and hand-written bytes where a client must misbehave
or vanish)."""

import signal
import socket
import struct
import time

import jwt
import psutil
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from support import TOKEN_SECRET as SECRET
from support import (RawClient, access_lines, admin_port, closed_with, frame, read_response_head,
                     read_until_closed, scrape, stop_cleanly, stopped_log, upgrade_request, value,
                     wait_until)

CYCLES = 2000
BATCH = 50  # subscribers open at once during the cycles


def token(sub="reader", channels=("news", "chat:1")):
    return jwt.encode({"sub": sub, "channels": list(channels)}, SECRET, algorithm="HS256")


def live_url(bridge, with_token=True):
    return bridge.url("/live" + ("?token=" + token() if with_token else ""))


def start_live(start_bridge, *flags):
    bridge = start_bridge("--token-secret", SECRET, "--subscribe-route", "/live",
                          "--admin-port", "0", *flags)
    return bridge, admin_port(bridge)


def numbers(port):
    """What /metrics says of connections and channels now."""
    samples = scrape(port)
    return {name: value(samples, "greenbridge_" + name) for name in (
        "connections_open", "php_processes", "channels", "channel_subscriptions",
        "channel_subscribers")}


def idle(port):
    return {name: 0 for name in numbers(port)}


def raw_subscriber(port, path):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(upgrade_request(path))
    head = read_response_head(sock)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def test_a_subscriber_is_subscribed_without_php_and_a_data_message_closes_it_with_1003(
        start_bridge):
    bridge, port = start_live(start_bridge)
    with connect(live_url(bridge), open_timeout=20) as ws:
        assert numbers(port) == {"connections_open": 1, "php_processes": 0, "channels": 2,
                                 "channel_subscriptions": 2, "channel_subscribers": 1}
        assert bridge.php_processes() == []
        ws.ping().wait(10)  # the bridge answers pings with nothing else running
        ws.send("may I?")
        assert closed_with(ws) == (1003, "this route only receives")
    wait_until(lambda: numbers(port) == idle(port), 10, "no connection or channel left")
    log = stop_cleanly(bridge)
    assert log.count("sent a data message to a subscribe route") == 1, log
    [access] = access_lines(log)
    assert "/live?token=... " in access and "close=1003" in access and "php=none" in access


def test_a_subscribe_route_needs_a_valid_token(start_bridge):
    bridge, port = start_live(start_bridge)
    for url, reason in ((live_url(bridge, with_token=False),
                         "a token is required (?token= or Authorization: Bearer)"),
                        (bridge.url("/live?token=" + jwt.encode({"sub": "x"}, "y" * 32)),
                         "bad token signature")):
        with pytest.raises(InvalidStatus) as refusal:
            with connect(url, open_timeout=20):
                pass
        assert refusal.value.response.status_code == 401
        assert refusal.value.response.body.decode() == reason + "\n"
    assert numbers(port) == idle(port)
    log = stopped_log(bridge)
    assert access_lines(log) == [] and log.count("401 Unauthorized") == 2, log


def test_subscribers_count_against_max_connections_not_max_processes(start_bridge):
    bridge, port = start_live(start_bridge, "--max-connections", "3", "--max-processes", "1")
    with connect(live_url(bridge), open_timeout=20), connect(live_url(bridge), open_timeout=20):
        bridge.assert_serves()  # the one PHP process is still there to be had
        with connect(bridge.url("/"), open_timeout=20) as php_client:
            php_client.send(b"x")
            assert php_client.recv(timeout=20) == b"x"
            with pytest.raises(InvalidStatus) as refusal:
                with connect(live_url(bridge), open_timeout=20):
                    pass
            assert refusal.value.response.status_code == 503
    bridge.assert_serves()


def test_a_subscriber_that_answers_no_ping_is_closed_with_1001(start_bridge):
    bridge, port = start_live(start_bridge, "--ping-interval", "0.3", "--ping-timeout", "0.5")
    sock = raw_subscriber(bridge.port, "/live?token=" + token())
    received = read_until_closed(sock)  # never answering the ping
    sock.close()
    assert received[:1] == b"\x89"  # the ping came first
    close_at = received.index(b"\x88")
    assert struct.unpack("!H", received[close_at + 2:close_at + 4])[0] == 1001
    assert b"no pong within 0.5s" in received[close_at:]
    wait_until(lambda: numbers(port) == idle(port), 10, "no connection or channel left")
    bridge.assert_serves()


def test_shutdown_closes_subscribers_with_1001(start_bridge):
    bridge, port = start_live(start_bridge, "--shutdown-timeout", "0.2")
    with connect(live_url(bridge), open_timeout=20) as ws:
        wait_until(lambda: numbers(port)["connections_open"] == 1, 10, "the subscriber counted")
        bridge.signal(signal.SIGTERM)
        assert closed_with(ws) == (1001, "server shutting down")
    assert bridge.wait(30) == 0


def test_thousands_of_subscribers_coming_and_vanishing_leave_nothing_behind(start_bridge):
    """2,000 connect/close cycles, 50 at a time: a third close with a close frame, a third
    vanish with a FIN, a third with a reset. No channel, no subscriber, no descriptor left."""
    bridge, port = start_live(start_bridge)
    server = psutil.Process(bridge.process.pid)
    path = "/live?token=" + token()
    close_frame = frame(0x8, struct.pack("!H", 1000))
    raw_subscriber(bridge.port, path).close()  # whatever the first connection sets up, once
    wait_until(lambda: numbers(port) == idle(port), 10, "the first subscriber gone")
    descriptors = server.num_fds()
    started = time.monotonic()
    for batch_start in range(0, CYCLES, BATCH):
        socks = [raw_subscriber(bridge.port, path) for _ in range(BATCH)]
        for number, sock in enumerate(socks, start=batch_start):
            if number % 3 == 0:
                sock.sendall(close_frame)
                assert read_until_closed(sock)[:2] == b"\x88\x02"
            elif number % 3 == 2:  # a reset, not a FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
    seconds = time.monotonic() - started
    wait_until(lambda: numbers(port) == idle(port), 20,
               lambda: "nothing left (now %s)" % numbers(port))
    wait_until(lambda: server.num_fds() <= descriptors, 20,
               lambda: "descriptors back to %d (now %d)" % (descriptors, server.num_fds()))
    samples = scrape(port)
    assert value(samples, "greenbridge_connections_total", code="1000") >= CYCLES // 3
    print("%d subscribe-route cycles in %.1fs" % (CYCLES, seconds))
    log = stop_cleanly(bridge)
    assert len(access_lines(log)) == CYCLES + 1


def _settled_subscribers(port, count, first):
    """`count` subscribers, each with its own token, once their connections wait on them
    (each answered a ping: its greenlet is parked on the client)."""
    clients = [RawClient(port, "/live?token=" + token("idle-%d" % number))
               for number in range(first, first + count)]
    for client in clients:
        client.sock.sendall(frame(0x9, b"settled"))
    for client in clients:
        assert client.read_frame() == (0xA, b"settled")
    return clients


def test_an_idle_subscriber_costs_the_server_under_20_kib(start_bridge):
    """The server's RSS over 1,000 idle subscribers, after 100 that warm it up: under 20 KiB
    each (25 while each connection kept its request's environ, headers and reader after the
    101; 17.5 since; scripts/memory_per_connection.py tells where it goes)."""
    bridge, _ = start_live(start_bridge, "--max-connections", "2000")
    server = psutil.Process(bridge.process.pid)
    held = _settled_subscribers(bridge.port, 100, 0)
    before = server.memory_info().rss
    held += _settled_subscribers(bridge.port, 1000, 100)
    per_subscriber = (server.memory_info().rss - before) / 1000
    for client in held:
        client.sock.close()
    assert per_subscriber < 20 * 1024, "%.1f KiB per idle subscriber" % (per_subscriber / 1024)
