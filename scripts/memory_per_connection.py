#!/usr/bin/env python3
"""What one idle connection costs the server: RSS per connection, and where it goes.

One greenbridge process (no workers) on loopback. For each kind of connection
(an idle subscriber on a ``--subscribe-route``; an idle PHP connection, for
reference) it opens a warm-up batch, measures, opens ``--count`` more, and
measures again: the RSS difference divided by the count. A connection counts
once it is settled: a subscriber once it received a publication sent through
the server API, a PHP connection once its PHP process echoed a message.

``--tracemalloc`` runs the server under tracemalloc (which inflates RSS: its
figures are for the breakdown only) and prints the allocations retained per
connection, grouped by the line that made them, and the C stack greenlets keep
saved (greenlet's ``_stack_saved``, which tracemalloc does not see).

    .venv/bin/python scripts/memory_per_connection.py                 # both kinds
    .venv/bin/python scripts/memory_per_connection.py --kind subscriber --tracemalloc
"""

import argparse
import base64
import http.client
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jwt
import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ECHO_SCRIPT = os.path.join(REPO, "conf", "echo.php")
ROUTE, CHANNEL, SECRET, API_KEY = "/live", "idle", "memory-secret-0123456789abcdef0123", "key"
KIB = 1024
_DEADLINE = 60.0

# The server, started by this same file (--serve): tracemalloc from the first
# allocation when asked, a snapshot and the greenlets' saved stacks on SIGUSR2.
_SERVE = """
import gc, pickle, signal, sys, tracemalloc
dump_path, frames = sys.argv[1], int(sys.argv[2])
if frames:
    tracemalloc.start(frames)

def dump(signum, frame):
    import greenlet
    stacks = [g._stack_saved for g in gc.get_objects() if isinstance(g, greenlet.greenlet)]
    snapshot = tracemalloc.take_snapshot() if frames else None
    # A greenlet's Python frames live in a stack of its own (16 KiB chunks, used
    # from their start): about what its frames take there (3.11's frame layout).
    frame_stack = 0
    for g in gc.get_objects():
        if isinstance(g, greenlet.greenlet):
            frame = g.gr_frame
            while frame is not None:
                code = frame.f_code
                frame_stack += 80 + 8 * (code.co_nlocals + len(code.co_cellvars)
                                         + len(code.co_freevars) + code.co_stacksize)
                frame = frame.f_back
    with open(dump_path + ".tmp", "wb") as out:
        pickle.dump({"snapshot": snapshot, "greenlets": len(stacks),
                     "stack_saved": sum(stacks), "frame_stack": frame_stack}, out)
    import os
    os.rename(dump_path + ".tmp", dump_path)

signal.signal(signal.SIGUSR2, dump)
sys.argv = ["greenbridge"] + sys.argv[3:]
from greenbridge.__main__ import run
run()
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _until(condition, what):
    deadline = time.monotonic() + _DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out: %s" % what)
        time.sleep(0.02)


class Server:
    def __init__(self, options, workdir):
        self.port, self.admin_port = free_port(), free_port()
        self.dump_path = os.path.join(workdir, "dump.pickle")
        command = [sys.executable, "-c", _SERVE, self.dump_path,
                   str(options.frames if options.tracemalloc else 0),
                   "-H", "127.0.0.1", "-P", str(self.port), "-e", options.php,
                   "-s", ECHO_SCRIPT, "--message-mode", "framed",
                   "--admin-port", str(self.admin_port), "--api-key", API_KEY,
                   "--token-secret", SECRET, "--subscribe-route", ROUTE,
                   "--max-connections", "10000", "--max-processes", "10000",
                   "--log-level", "warning", "--shutdown-timeout", "2"]
        self.log = open(os.path.join(workdir, "server.log"), "wb")
        self.process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        _until(self._connectable, "the server did not start")

    def _connectable(self):
        if self.process.poll() is not None:
            raise RuntimeError("the server exited; see %s" % self.log.name)
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def rss(self):
        return psutil.Process(self.process.pid).memory_info().rss

    def dump(self):
        if os.path.exists(self.dump_path):
            os.unlink(self.dump_path)
        os.kill(self.process.pid, signal.SIGUSR2)
        _until(lambda: os.path.exists(self.dump_path), "no dump")
        with open(self.dump_path, "rb") as dumped:
            return pickle.load(dumped)

    def publish(self, data):
        api = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=_DEADLINE)
        api.request("POST", "/api/publish", json.dumps({"channel": CHANNEL, "data": data}),
                    {"X-API-Key": API_KEY, "Content-Type": "application/json"})
        answer = api.getresponse().read()
        api.close()
        if b'"result"' not in answer:
            raise RuntimeError("publish refused: %r" % answer)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def _upgrade(port, path):
    sock = socket.create_connection(("127.0.0.1", port), timeout=_DEADLINE)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n" % (path, port, key)).encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed during the upgrade")
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 101"):
        raise RuntimeError("upgrade refused: %r" % answer.split(b"\r\n", 1)[0])
    return sock


def _receive_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise RuntimeError("connection closed")
        data += chunk
    return data


def _receive_frame(sock):
    header = _receive_exactly(sock, 2)
    length = header[1] & 0x7F
    if length >= 126:
        raise RuntimeError("unexpected large frame")
    return _receive_exactly(sock, length)


class Subscribers:
    """Idle subscribers on the subscribe route, settled by one publication."""

    name = "idle subscriber"

    def __init__(self, server):
        self.server, self.sockets, self._opened = server, [], 0

    def open(self, count):
        batch = []
        for _ in range(count):
            token = jwt.encode({"sub": "user-%d" % self._opened, "channels": [CHANNEL]}, SECRET,
                               algorithm="HS256")
            self._opened += 1
            batch.append(_upgrade(self.server.port, "%s?token=%s" % (ROUTE, token)))
        data = "settled-%d" % self._opened
        self.server.publish(data)
        for sock in batch:
            if _receive_frame(sock) != json.dumps(data).encode():
                raise RuntimeError("unexpected publication")
        self.sockets += batch


class PhpConnections:
    """Idle PHP connections (conf/echo.php, framed), settled by one echoed message each."""

    name = "idle PHP connection"

    def __init__(self, server):
        self.server, self.sockets = server, []

    def open(self, count):
        batch = [_upgrade(self.server.port, "/") for _ in range(count)]
        for sock in batch:
            sock.sendall(b"\x81\x82\x00\x00\x00\x00hi")  # "hi", masked with zeros
        for sock in batch:
            if _receive_frame(sock) != b"hi":
                raise RuntimeError("unexpected echo")
        self.sockets += batch


def measure(kind, options):
    with tempfile.TemporaryDirectory(prefix="memory-") as workdir:
        server = Server(options, workdir)
        try:
            connections = kind(server)
            warmup, count = (options.warmup, options.count) if kind is Subscribers else \
                (options.php_warmup, options.php_count)
            connections.open(warmup)
            time.sleep(options.settle)  # what the warm-up left behind is let go
            before_rss, before = server.rss(), server.dump()
            connections.open(count)
            time.sleep(options.settle)
            after_rss, after = server.rss(), server.dump()
            report(connections.name, count, before_rss, after_rss, before, after, options)
            for sock in connections.sockets:
                sock.close()
        finally:
            server.stop()


def report(name, count, before_rss, after_rss, before, after, options):
    per_connection = (after_rss - before_rss) / count / KIB
    print("%s: %.1f KiB of server RSS each (%d connections)%s" % (
        name, per_connection, count, " (under tracemalloc)" if options.tracemalloc else ""))
    greenlets = (after["greenlets"] - before["greenlets"]) / count
    stacks = (after["stack_saved"] - before["stack_saved"]) / count
    print("  greenlets: %.2f each, C stack saved: %.0f bytes each" % (greenlets, stacks))
    print("  Python frames in greenlets' frame stacks: about %.0f bytes each" % (
        (after["frame_stack"] - before["frame_stack"]) / count))
    if after["snapshot"] is None:
        return
    differences = after["snapshot"].compare_to(before["snapshot"], "traceback")
    total = sum(difference.size_diff for difference in differences)
    print("  tracemalloc: %.0f bytes retained each; the largest:" % (total / count))
    for difference in differences[:options.top]:
        if difference.size_diff < count * 16:
            break
        print("  %7.0f B %6.2f blocks  %s" % (
            difference.size_diff / count, difference.count_diff / count,
            " <- ".join("%s:%d" % (os.path.relpath(frame.filename, REPO)
                                   if frame.filename.startswith(REPO)
                                   else "/".join(frame.filename.split("/")[-2:]),
                                   frame.lineno) for frame in difference.traceback)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("subscriber", "php", "both"), default="both")
    parser.add_argument("--count", type=int, default=2000, help="subscribers measured")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--php-count", type=int, default=100, help="PHP connections measured")
    parser.add_argument("--php-warmup", type=int, default=20)
    parser.add_argument("--php", default="php")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--frames", type=int, default=1, help="traceback depth (tracemalloc)")
    parser.add_argument("--top", type=int, default=25)
    options = parser.parse_args()
    kinds = {"subscriber": [Subscribers], "php": [PhpConnections],
             "both": [Subscribers, PhpConnections]}[options.kind]
    for kind in kinds:
        measure(kind, options)


if __name__ == "__main__":
    main()
