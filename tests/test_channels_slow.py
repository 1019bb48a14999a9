"""Slow subscribers and busy publishers, through a real bridge: the server API driven by the
real ``cent`` client, subscribers on a subscribe route (python-websockets, and a raw socket
that never reads, with a tiny receive buffer), the server's memory measured with psutil."""

import base64
import json
import socket
import struct
import threading

import jwt
import psutil
from cent import Client, PresenceStatsRequest, PublishRequest
from websockets.sync.client import connect

from support import TOKEN_SECRET, admin_port, read_response_head, scrape, stopped_log, \
    upgrade_request, value, wait_until

API_KEY = "the-api-key-of-these-tests"
PUBLICATIONS = 2000
SIZE = 10 * 1024
# What 2,000 publications of 10 KiB may grow the server by (five readers and one stalled
# subscriber, --subscriber-queue-size 1 MiB): measured 1.0-1.3 MiB; 16 leaves room for
# noise, and is far below the 20 MiB published.
RSS_GROWTH_BOUND = 16 * 1024 * 1024


def start_api_bridge(start_bridge, *flags):
    bridge = start_bridge("--admin-port", "0", "--api-key", API_KEY, "--token-secret",
                          TOKEN_SECRET, "--subscribe-route", "/live", *flags)
    bridge.admin = admin_port(bridge)
    return bridge


def api(bridge):
    """A cent client: one keep-alive HTTP connection of its own."""
    return Client("http://127.0.0.1:%d/api" % bridge.admin, API_KEY, timeout=30)


def live_path(user, channels):
    return "/live?token=" + jwt.encode({"sub": user, "channels": channels}, TOKEN_SECRET,
                                       algorithm="HS256")


def wait_subscribed(client, channel, count):
    wait_until(lambda: client.presence_stats(PresenceStatsRequest(channel=channel)).num_clients
               == count, 15, "%d subscribers of %s" % (count, channel))


def stalled_subscriber(bridge, channel):
    """A subscriber that never reads past the 101 answer, with a 4 KiB receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window
    sock.settimeout(30)
    sock.connect(("127.0.0.1", bridge.port))
    sock.sendall(upgrade_request(live_path("stalled", [channel])))
    assert read_response_head(sock).startswith(b"HTTP/1.1 101 ")
    return sock


def server_frames(data, offset=None):
    """(opcode, payload) of each whole unmasked frame in `data` from `offset` (a cut last one
    left out); with ``offset`` given, also where the next frame starts."""
    frames, start = [], offset
    offset = offset or 0
    while offset + 2 <= len(data):
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        header = {126: 4, 127: 10}.get(length, 2)
        if offset + header > len(data):
            break
        if length >= 126:
            (length,) = struct.unpack_from("!H" if length == 126 else "!Q", data, offset + 2)
        if offset + header + length > len(data):
            break
        frames.append((opcode, bytes(data[offset + header:offset + header + length])))
        offset += header + length
    return frames if start is None else (frames, offset)


class Reader:
    """A python-websockets subscriber read by a thread of its own, until `count` messages."""

    def __init__(self, bridge, user, channel, count):
        self.ws = connect(bridge.url(live_path(user, [channel])), max_size=None, legacy=True)
        self.messages = []
        self.error = None
        self._count = count
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self):
        self._thread.start()

    def _read(self):
        try:
            while len(self.messages) < self._count:
                self.messages.append(self.ws.recv(timeout=60))
        except Exception as error:  # shown by the test's assertion
            self.error = error

    def join(self):
        self._thread.join(120)
        assert not self._thread.is_alive() and self.error is None, \
            "reader stopped after %d messages: %r" % (len(self.messages), self.error)
        self.ws.close()


class PeakRss:
    """The largest RSS of a process while the block runs, sampled every 10 ms."""

    def __init__(self, pid):
        self._process = psutil.Process(pid)
        self.before = self.peak = self._process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._done.wait(0.01):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join(5)
        self.peak = max(self.peak, self._process.memory_info().rss)


def test_a_stalled_subscriber_is_dropped_while_five_readers_get_everything_in_bounded_memory(
        start_bridge):
    bridge = start_api_bridge(start_bridge)
    client = api(bridge)
    readers = [Reader(bridge, "reader%d" % number, "feed", PUBLICATIONS) for number in range(5)]
    stalled = stalled_subscriber(bridge, "feed")
    wait_subscribed(client, "feed", 6)
    for reader in readers:
        reader.start()
    filler = bytes(range(256)) * (SIZE // 256)
    with PeakRss(bridge.process.pid) as rss:
        for number in range(PUBLICATIONS):
            client.publish(PublishRequest(channel="feed", data=None, b64data=base64.b64encode(
                struct.pack("!I", number) + filler[4:]).decode()))
        for reader in readers:
            reader.join()
    expected = [struct.pack("!I", number) + filler[4:] for number in range(PUBLICATIONS)]
    for reader in readers:
        assert reader.messages == expected  # in order, none missing, none twice

    # The stalled one was closed: what it holds is a prefix of the publications, then at
    # most a close frame with 1008 (none when the server had cut a frame), then the end.
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    received = b""
    while True:
        chunk = stalled.recv(1 << 16)
        if not chunk:
            break
        received += chunk
    frames = server_frames(received)
    data = [payload for opcode, payload in frames if opcode == 0x2]
    assert data == expected[:len(data)] and len(data) < PUBLICATIONS
    closes = [payload for opcode, payload in frames if opcode == 0x8]
    assert closes in ([], [struct.pack("!H", 1008) + b"subscriber too slow"])
    stalled.close()

    assert value(scrape(bridge.admin), "greenbridge_channel_subscribers_dropped_slow_total") == 1
    growth = rss.peak - rss.before
    print("server RSS %.1f MiB before, grew by %.1f MiB at most; the stalled subscriber got "
          "%d publications" % (rss.before / 2**20, growth / 2**20, len(data)))
    assert growth <= RSS_GROWTH_BOUND
    bridge.assert_serves()
    log = stopped_log(bridge)
    assert log.count("subscriber too slow, ") == 1
    assert "Traceback" not in log


def test_publications_from_several_threads_at_once_arrive_once_each_in_each_publishers_order(
        start_bridge):
    publishers, each = 4, 150
    bridge = start_api_bridge(start_bridge, "--workers", "2")
    readers = [Reader(bridge, "reader%d" % number, "busy", publishers * each)
               for number in range(3)]
    wait_subscribed(api(bridge), "busy", 3)
    for reader in readers:
        reader.start()
    errors = []

    def publish(publisher):
        try:
            client = api(bridge)
            for number in range(each):
                client.publish(PublishRequest(channel="busy", data=[publisher, number]))
        except Exception as error:  # shown by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=publish, args=(publisher,))
               for publisher in range(publishers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    for reader in readers:
        reader.join()
        received = [tuple(json.loads(message)) for message in reader.messages]
        assert sorted(received) == [(publisher, number) for publisher in range(publishers)
                                    for number in range(each)]  # each once
        for publisher in range(publishers):  # each publisher's in its order
            assert [number for who, number in received if who == publisher] == list(range(each))
    bridge.assert_serves()



def test_publications_and_phps_messages_to_a_slow_client_arrive_as_whole_frames(start_bridge):
    """A PHP connection subscribed through its token: PHP floods the client (10 MiB) while
    publications go to it; the client reads 4 KiB at a time, so both are often sent in
    pieces. Every frame arrives whole: PHP's bytes all there, the publications all in order."""
    chunks, count = 160, 300
    bridge = start_api_bridge(start_bridge)
    client = api(bridge)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", bridge.port))
    sock.sendall(upgrade_request("/?do=flood&chunks=%d&token=%s" % (chunks, jwt.encode(
        {"sub": "php-user", "channels": ["mixed"]}, TOKEN_SECRET, algorithm="HS256"))))
    assert read_response_head(sock).startswith(b"HTTP/1.1 101 ")
    wait_subscribed(client, "mixed", 1)
    php_bytes, publications, others = [0], [], []

    def read():
        buffer, offset = bytearray(), 0
        while php_bytes[0] < chunks * 65536 or len(publications) < count:
            chunk = sock.recv(4096)
            assert chunk, "closed after %d bytes of PHP's" % php_bytes[0]
            buffer.extend(chunk)
            frames, offset = server_frames(buffer, offset)
            for opcode, payload in frames:
                if opcode == 0x2 and payload.strip(b"z") == b"":
                    php_bytes[0] += len(payload)
                elif opcode == 0x1:
                    publications.append(payload)
                else:
                    others.append((opcode, payload[:40]))
            del buffer[:offset]
            offset = 0

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    for number in range(count):
        client.publish(PublishRequest(channel="mixed", data=[number, "p" * 1000]))
    reader.join(60)
    assert not reader.is_alive()
    assert others == []  # no frame but PHP's and the publications: none cut into another
    assert php_bytes[0] == chunks * 65536
    assert publications == [json.dumps([number, "p" * 1000], separators=(",", ":")).encode()
                            for number in range(count)]
    sock.close()
    bridge.assert_serves()
