#!/usr/bin/env python3
"""greenbridge against websocketd, side by side, on this machine.

    .venv/bin/python scripts/bench.py [--repetitions 5] [--only pingpong,churn]

Both servers run the same PHP handler (scripts/bench/handler.php) on
loopback: websocketd over stdin/stdout (--binary), greenbridge over its
back-connection in raw mode (framed mode with its PHP library in the
framed- scenarios), with --workers auto. The load comes from client
processes using picows (a Cython WebSocket client); each reports its own CPU
time, so a client-bound run shows. Runs are interleaved: every repetition of
a scenario starts each server afresh, alternating which goes first. Prints a
table of medians and ratios, writes the raw results as JSON and a PNG chart
(scripts/bench-results/ by default). The channel scenarios compare
greenbridge's fan-out with Pushpin's; fanout-redis runs it through a
redis-server (--broker), fanout-cluster across two nodes over one, against one
node with its in-process broker.
"""

import argparse
import asyncio
import importlib.util
import json
import multiprocessing
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANDLER = os.path.join(REPO, "scripts", "bench", "handler.php")
ORIGIN = os.path.join(REPO, "scripts", "bench", "pushpin_origin.py")
# The channel scenarios: one channel, subscribers on a subscribe route with tokens.
CHANNEL = "fan"
SUBSCRIBE_ROUTE = "/live"
API_KEY = "bench-api-key"
TOKEN_SECRET = "bench-token-secret-0123456789abcdef"
KIB, MIB = 1024, 1024 * 1024
_START_TIMEOUT = 20.0
_CLIENT_TIMEOUT = 600.0


# -- the servers ------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One server process on loopback; its own CPU and memory (PHP excluded)."""

    name = None
    process = None

    def _start(self, command, log_dir, name=None):
        self.log = open(os.path.join(log_dir, "%s.log" % (name or self.name)), "ab")
        return subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                stdout=self.log, stderr=subprocess.STDOUT)

    def url(self, path=""):
        return "ws://127.0.0.1:%d/%s" % (self.port, path)

    def _wait_connectable(self, port):
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("%s exited at start-up" % self.name)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                time.sleep(0.5)  # workers up too
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not start" % self.name)

    def own_processes(self):
        """The server and its workers, not the PHP processes it started."""
        root = psutil.Process(self.process.pid)
        found = [root]
        for child in root.children(recursive=True):
            try:
                if not child.name().startswith("php"):
                    found.append(child)
            except psutil.NoSuchProcess:
                pass
        return found

    def cpu_seconds(self):
        total = 0.0
        for process in self.own_processes():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss(self):
        return sum(process.memory_info().rss for process in self.own_processes())

    def php_uss(self):
        total = 0
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if child.name().startswith("php"):
                    total += child.memory_full_info().uss
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self):
        _stop(self.process)
        self.log.close()


def _stop(process):
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class Greenbridge(Server):
    """greenbridge with --workers; in the channel scenarios, its API and a subscribe route."""

    name = "greenbridge"

    def __init__(self, options, log_dir, message_mode="raw", channels=False, broker=None,
                 name=None, workers=None):
        self.port = free_port()
        command = [sys.executable, "-m", "greenbridge", "-H", "127.0.0.1", "-P", str(self.port),
                   "-e", options.php, "-s", HANDLER, "--workers", workers or options.workers,
                   "--message-mode", message_mode,
                   "--max-connections", "5000", "--max-processes", "5000",
                   "--shutdown-timeout", "2"]
        if channels:
            self.admin_port = free_port()
            command += ["--admin-port", str(self.admin_port), "--api-key", API_KEY,
                        "--token-secret", TOKEN_SECRET, "--subscribe-route", SUBSCRIBE_ROUTE]
        if broker:
            command += ["--broker", broker]
        self.process = self._start(command, log_dir, name)
        self._wait_connectable(self.port)

    def subscriber_paths(self, first, count):
        """A path with its own token (user "subscriber-N", the channel) per subscriber."""
        import jwt

        return ["%s?token=%s" % (SUBSCRIBE_ROUTE[1:], jwt.encode(
            {"sub": "subscriber-%d" % number, "channels": [CHANNEL]}, TOKEN_SECRET,
            algorithm="HS256")) for number in range(first, first + count)]

    def publisher(self):
        """Publications through the server API (Centrifugo's shape), as cent sends them."""
        return Publisher(self.admin_port, "/api/publish", {"X-API-Key": API_KEY},
                         lambda data: {"channel": CHANNEL, "data": data})


class Cluster(Server):
    """greenbridge nodes over one Redis (redis-server, no persistence): subscribers split
    over the nodes, publishers spread over the nodes' APIs. The nodes share this
    machine as they would share out machines: each has its share of the workers of the one
    node it is compared with (at least one), so as many processes deliver on the same cores."""

    def __init__(self, options, log_dir, nodes):
        self.name = cluster_name(nodes)
        self.redis_port = free_port()
        self.process = self._start(["redis-server", "--port", str(self.redis_port),
                                    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                   log_dir, "redis")
        self.port = self.redis_port
        self._wait_connectable(self.redis_port)
        broker = "redis://127.0.0.1:%d/0" % self.redis_port
        workers = options.workers if nodes == 1 else \
            str(max(1, (os.cpu_count() if options.workers == "auto" else int(options.workers))
                    // nodes))
        self.nodes = []
        try:
            for number in range(1, nodes + 1):
                self.nodes.append(Greenbridge(options, log_dir, channels=True, broker=broker,
                                              name="greenbridge-node-%d" % number,
                                              workers=workers))
        except BaseException:
            self.stop()
            raise

    def url(self, path=""):
        return ""  # the subscriber paths are whole addresses, on the nodes in turn

    def subscriber_paths(self, first, count):
        """An equal share on each node, in node order (the scenario gives each client
        process a contiguous share)."""
        share = count // len(self.nodes)
        paths = []
        for index, node in enumerate(self.nodes):
            number = share if index < len(self.nodes) - 1 else count - share * index
            paths += [node.url() + path
                      for path in node.subscriber_paths(first + len(paths), number)]
        return paths

    def publisher(self):
        """Publishers through each node's API in turn, as a load balancer spreads them."""
        self._publishers = getattr(self, "_publishers", 0) + 1
        return self.nodes[(self._publishers - 1) % len(self.nodes)].publisher()

    def own_processes(self):
        return [process for node in self.nodes for process in node.own_processes()] + \
            [psutil.Process(self.process.pid)]

    def stop(self):
        for node in self.nodes:
            node.stop()
        super().stop()


def cluster_name(nodes):
    return "greenbridge-%d-node%s-redis" % (nodes, "s" if nodes > 1 else "")


class Websocketd(Server):
    name = "websocketd"

    def __init__(self, options, log_dir, message_mode="raw"):
        self.port = free_port()
        self.process = self._start(["websocketd", "--port=%d" % self.port,
                                    "--address=127.0.0.1", "--binary=true", options.php,
                                    HANDLER], log_dir)
        self._wait_connectable(self.port)


class Pushpin(Server):
    """Pushpin (its runner, condure, zurl, proxy and handler) in front of the smallest
    origin, which subscribes every WebSocket to the channel (scripts/bench/pushpin_origin.py).

    Its limits are raised so that it delivers everything: message_rate (deliveries
    a second, 2,500 by default) and message_hwm (deliveries waiting for that
    rate, 25,000) would otherwise slow and then drop the fan-out.
    """

    name = "pushpin"

    def __init__(self, options, log_dir):
        self.port, origin_port, self.publish_port = free_port(), free_port(), free_port()
        self.home = tempfile.mkdtemp(prefix="pushpin-", dir=log_dir)
        zmq_ports = [free_port() for _ in range(3)]
        with open(os.path.join(self.home, "routes"), "w") as routes:
            routes.write("* 127.0.0.1:%d,over_http\n" % origin_port)
        with open(os.path.join(self.home, "pushpin.conf"), "w") as config:
            config.write(PUSHPIN_CONFIG.format(
                home=self.home, port=self.port, publish_port=self.publish_port,
                push_port=zmq_ports[0], sub_port=zmq_ports[1], command_port=zmq_ports[2]))
        self.origin = self._start([sys.executable, ORIGIN, str(origin_port), CHANNEL], log_dir,
                                  "pushpin-origin")
        self.process = self._start(["pushpin", "--config",
                                    os.path.join(self.home, "pushpin.conf")], log_dir)
        self._wait_connectable(self.port)
        self._wait_connectable(self.publish_port)

    def subscriber_paths(self, first, count):
        return [SUBSCRIBE_ROUTE[1:]] * count

    def publisher(self):
        """Publications through the GRIP publish API, as a WebSocket message each."""
        return Publisher(self.publish_port, "/publish/", {}, lambda data: {"items": [
            {"channel": CHANNEL, "formats": {"ws-message": {
                "content": json.dumps(data, separators=(",", ":"))}}}]})

    def stop(self):
        super().stop()
        _stop(self.origin)


# Pushpin's own pushpin.conf (Debian's) with everything in a directory of this run, zurl
# started by the runner (Debian expects a system zurl) and the limits raised.
PUSHPIN_CONFIG = """\
[global]
include={{libdir}}/internal.conf
rundir={home}
ipc_prefix=pushpin-
[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port=127.0.0.1:{port}
logdir={home}
log_level=1
client_maxconn=50000
condure_bin=condure
zurl_bin=zurl
[proxy]
routesfile=routes
zurl_out_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in
zurl_out_stream_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in-stream
zurl_in_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-out
sig_key=bench
updates_check=off
[handler]
push_in_spec=tcp://127.0.0.1:{push_port}
push_in_sub_specs=tcp://127.0.0.1:{sub_port}
push_in_http_addr=127.0.0.1
push_in_http_port={publish_port}
stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats
command_spec=tcp://127.0.0.1:{command_port}
message_rate=10000000
message_hwm=10000000
"""


class Publisher:
    """POSTs publications over one keep-alive HTTP connection, each when the last was answered."""

    def __init__(self, port, path, headers, body_of):
        import http.client

        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self._path = path
        self._headers = {"Content-Type": "application/json", **headers}
        self._body_of = body_of

    def publish(self, data):
        self._connection.request("POST", self._path, json.dumps(self._body_of(data)),
                                 self._headers)
        reply = self._connection.getresponse()
        answer = reply.read()
        if reply.status != 200 or b'"error"' in answer:
            raise RuntimeError("publish refused: %d %r" % (reply.status, answer[:200]))

    def close(self):
        self._connection.close()


# -- the client (runs in its own processes) ----------------------------------

def _client_main(scenario, url, arguments, ready, go, results):
    started_cpu = _own_cpu()
    try:
        outcome = asyncio.run(CLIENT_SCENARIOS[scenario](url, ready, go, **arguments))
    except Exception as error:  # reported, not raised: the parent prints it
        outcome = {"error": "%s: %s" % (type(error).__name__, error)}
    outcome["client_cpu"] = _own_cpu() - started_cpu
    results.put(outcome)


def _own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Connection:
    """A picows connection that counts echoed bytes and wakes whoever waits for them."""

    def __init__(self):
        from picows import WSListener

        connection = self

        class Listener(WSListener):
            def on_ws_frame(self, transport, frame):
                connection.on_frame(frame)

            def on_ws_disconnected(self, transport):
                connection.on_disconnected()

        self.listener_class = Listener
        self.transport = None
        self.received = bytearray()
        self.counted = 0
        self._wanted = 0
        self._waiter = None
        self.keep = False
        self.disconnected = False
        self.close_code = None

    async def open(self, url):
        from picows import ws_connect

        self.transport, _ = await ws_connect(lambda: self.listener_class(), url,
                                             max_frame_size=64 * MIB,
                                             websocket_handshake_timeout=60)
        return self

    def on_frame(self, frame):
        from picows import WSMsgType

        if frame.msg_type == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code()
            self.transport.disconnect()
            return
        if frame.msg_type not in (WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION):
            return
        self.counted += frame.payload_size
        if self.keep:
            self.received += frame.get_payload_as_memoryview()
        if self._waiter is not None and self.counted >= self._wanted:
            self._waiter.set_result(None)
            self._waiter = None

    def on_disconnected(self):
        self.disconnected = True
        if self._waiter is not None:
            self._waiter.set_exception(ConnectionError("disconnected (close %s)" % self.close_code))
            self._waiter = None

    async def round_trip(self, payload, keep=False):
        """Send one message; return when as many bytes came back (the echo may be split)."""
        from picows import WSMsgType

        if self.disconnected:
            raise ConnectionError("disconnected (close %s)" % self.close_code)
        self.counted, self.keep, self.received = 0, keep, bytearray()
        self._wanted = len(payload)
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.send(WSMsgType.BINARY, payload)
        await self._waiter
        if keep and bytes(self.received) != payload:
            raise AssertionError("echo differs from what was sent")

    def close(self):
        if not self.disconnected:
            from picows import WSCloseCode
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()


async def _open_many(url, count, parallel):
    gate = asyncio.Semaphore(parallel)

    async def one():
        async with gate:
            return await _Connection().open(url)

    return await asyncio.gather(*(one() for _ in range(count)))


def _wait(event):
    if not event.wait(_CLIENT_TIMEOUT):
        raise TimeoutError("the other client processes never got ready")


async def client_pingpong(url, ready, go, round_trips, size):
    connection = await _Connection().open(url)
    payload = os.urandom(size)
    await connection.round_trip(payload)  # PHP is up
    ready.set()
    _wait(go)
    latencies = []
    started = time.monotonic()
    for _ in range(round_trips):
        sent = time.perf_counter()
        await connection.round_trip(payload)
        latencies.append(time.perf_counter() - sent)
    finished = time.monotonic()
    connection.close()
    return {"started": started, "finished": finished, "latencies": latencies}


async def client_concurrent(url, ready, go, connections, round_trips, size):
    opened = await _open_many(url, connections, connections)
    payload = os.urandom(size)
    await asyncio.gather(*(connection.round_trip(payload) for connection in opened))
    ready.set()
    _wait(go)
    latencies = []

    async def drive(connection):
        for _ in range(round_trips):
            sent = time.perf_counter()
            await connection.round_trip(payload)
            latencies.append(time.perf_counter() - sent)

    started = time.monotonic()
    await asyncio.gather(*(drive(connection) for connection in opened))
    finished = time.monotonic()
    for connection in opened:
        connection.close()
    return {"started": started, "finished": finished, "latencies": latencies}


async def client_churn(url, ready, go, connections, parallel, size):
    payload = os.urandom(size)
    ready.set()
    _wait(go)
    latencies, failures = [], []
    gate = asyncio.Semaphore(parallel)

    async def one():
        async with gate:
            began = time.perf_counter()
            try:
                connection = await _Connection().open(url)
                await connection.round_trip(payload)
            except Exception as error:
                failures.append(str(error))
                return
            latencies.append(time.perf_counter() - began)
            connection.close()

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(connections)))
    finished = time.monotonic()
    return {"started": started, "finished": finished, "latencies": latencies,
            "failures": len(failures), "failure_examples": failures[:3]}


async def client_large(url, ready, go, sizes, repetitions):
    connection = await _Connection().open(url)
    await connection.round_trip(b"x")
    ready.set()
    _wait(go)
    times = {}
    for size in sizes:
        payload = os.urandom(size)
        times[str(size)] = []
        for _ in range(repetitions):
            sent = time.perf_counter()
            try:
                await asyncio.wait_for(connection.round_trip(payload, keep=True), 60)
            except Exception as error:
                times[str(size)].append("failed: %s" % (str(error) or type(error).__name__))
                return {"times": times}
            times[str(size)].append(time.perf_counter() - sent)
    connection.close()
    return {"times": times}


async def client_idle(url, ready, go, connections, hold, interval, size):
    opened = await _open_many(url, connections, 16)
    payload = os.urandom(size)
    ready.set()
    _wait(go)
    dropped = set()
    rounds = 0
    started = time.monotonic()
    while time.monotonic() - started < hold:
        outcomes = await asyncio.gather(*(asyncio.wait_for(connection.round_trip(payload), 60)
                                          for connection in opened), return_exceptions=True)
        dropped.update(index for index, outcome in enumerate(outcomes)
                       if isinstance(outcome, BaseException))
        rounds += 1
        await asyncio.sleep(max(0.0, started + rounds * interval - time.monotonic()))
    for connection in opened:
        connection.close()
    return {"dropped": len(dropped), "rounds": rounds}


async def client_stream(url, ready, go, seconds):
    connection = await _Connection().open(url)
    ready.set()
    _wait(go)
    start_count, started = connection.counted, time.monotonic()
    await asyncio.sleep(seconds)
    received, finished = connection.counted - start_count, time.monotonic()
    connection.close()
    return {"started": started, "finished": finished, "bytes": received}


class _Subscriber:
    """A picows connection that receives publications ``[sequence, time published]``.

    Each frame's payload and arrival time are kept as they come (the least work per
    frame, so the client is not what is measured) and checked once it is over:
    every sequence number once, in order. Sequence -1 is the warm-up publication
    that tells the subscription is live.
    """

    def __init__(self):
        from picows import WSListener, WSMsgType

        subscriber = self
        self.payloads, self.times = [], []
        self.warmed = False
        self.close_code = None
        clock = time.monotonic  # CLOCK_MONOTONIC: one clock for every process of the host

        class Listener(WSListener):
            def on_ws_frame(self, transport, frame):
                if frame.msg_type == WSMsgType.TEXT:
                    subscriber.payloads.append(frame.get_payload_as_bytes())
                    subscriber.times.append(clock())
                elif frame.msg_type == WSMsgType.CLOSE:
                    subscriber.close_code = frame.get_close_code()
                    transport.disconnect()

        self.listener_class = Listener
        self.transport = None

    async def open(self, url):
        from picows import ws_connect

        self.transport, _ = await ws_connect(lambda: self.listener_class(), url,
                                             websocket_handshake_timeout=60)
        return self

    def warm(self):
        """True once a warm-up publication came (the payloads so far are let go)."""
        if not self.warmed and self.payloads:
            self.warmed = True
            del self.payloads[:], self.times[:]
        return self.warmed

    def got_all(self, publications, publishers):
        """Whether the last publication of each publisher came (see check)."""
        if publishers == 1:
            return bool(self.payloads) and \
                self.payloads[-1].startswith(b"[%d," % (publications - 1))
        lasts = tuple(b"[%d," % sequence
                      for sequence in range(publications - publishers, publications))
        return sum(payload.startswith(lasts) for payload in self.payloads) >= publishers

    def check(self, publications, publishers, latencies):
        """(missing, out of order or twice, last arrival) of publications 0..n-1, published
        by `publishers` in turn (publisher p publishes p, p + publishers, ...): each
        publisher's in order. The latency of each one received in order goes to
        `latencies`."""
        expected, received, disorder = [0] * publishers, 0, 0
        for payload, arrived in zip(self.payloads, self.times):
            sequence, published = payload[1:-1].split(b",")
            sequence = int(sequence)
            if sequence < 0:
                continue  # a late warm-up
            publisher = sequence % publishers
            if sequence < expected[publisher]:
                disorder += 1
                continue
            latencies.append(arrived - float(published))
            received += 1
            expected[publisher] = sequence + publishers
        return publications - received, disorder, self.times[-1] if self.times else None

    def close(self):
        from picows import WSCloseCode

        if self.close_code is None:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()


async def _open_subscribers(url, paths, parallel=32):
    gate = asyncio.Semaphore(parallel)

    async def one(path):
        async with gate:
            return await _Subscriber().open(url + path)

    return await asyncio.gather(*(one(path) for path in paths))


async def _until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


async def client_fanout(url, ready, go, paths, publications, publishers, settle, received,
                        release):
    """Subscribe, say ready once every subscription is live, wait for every publication
    (at most `settle` seconds more once one subscriber has them all), say `received`, and
    close the subscribers once told (`release`: the server's CPU is measured before)."""
    subscribers = await _open_subscribers(url, paths)
    await _until(lambda: all(subscriber.warm() for subscriber in subscribers), _CLIENT_TIMEOUT,
                 "warm-up publication not received by every subscriber")
    ready.set()
    await _until(lambda: any(subscriber.got_all(publications, publishers)
                             for subscriber in subscribers),
                 _CLIENT_TIMEOUT, "the last publication never came")
    try:
        await _until(lambda: all(subscriber.got_all(publications, publishers)
                                 for subscriber in subscribers), settle, "")
    except TimeoutError:
        pass  # counted as missing below
    received.set()
    await asyncio.get_running_loop().run_in_executor(None, _wait, release)
    latencies, missing, disorder, finished = [], 0, 0, []
    for subscriber in subscribers:
        lost, unordered, last_arrival = subscriber.check(publications, publishers, latencies)
        missing += lost
        disorder += unordered
        if last_arrival is not None:
            finished.append(last_arrival)
        subscriber.close()
    return {"deliveries": len(latencies), "missing": missing, "disorder": disorder,
            "closed": sum(subscriber.close_code is not None for subscriber in subscribers),
            "finished": max(finished) if finished else None, "latencies": latencies}


async def client_idle_subscribers(url, ready, go, paths, warmup, phase, all_open, done):
    """`warmup` subscribers (then `ready`), the rest of `paths` once told (`phase`; then
    `all_open`), each once it got the warm-up publication; they hold until `done`."""
    opened = await _open_subscribers(url, paths[:warmup])
    await _until(lambda: all(subscriber.warm() for subscriber in opened), _CLIENT_TIMEOUT,
                 "warm-up publication not received")
    ready.set()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _wait, phase)
    opened += await _open_subscribers(url, paths[warmup:])
    await _until(lambda: all(subscriber.warm() for subscriber in opened), _CLIENT_TIMEOUT,
                 "warm-up publication not received")
    all_open.set()
    await loop.run_in_executor(None, _wait, done)
    dropped = sum(subscriber.close_code is not None for subscriber in opened)
    for subscriber in opened:
        subscriber.close()
    return {"dropped": dropped}


CLIENT_SCENARIOS = {
    "pingpong": client_pingpong, "concurrent": client_concurrent, "churn": client_churn,
    "large": client_large, "idle": client_idle, "stream": client_stream,
    "fanout": client_fanout, "idle-subscribers": client_idle_subscribers,
}


def run_clients(scenario, url, arguments, processes, during=None, warm=None):
    """Run `processes` client processes (`arguments`: one dict for all, or a list of one
    per process); `warm()` runs every 0.2 s until they are ready; `during(server)` once
    they all started."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    readies = [context.Event() for _ in range(processes)]
    go = context.Event()
    if isinstance(arguments, dict):
        arguments = [arguments] * processes
    workers = [context.Process(target=_client_main,
                               args=(scenario, url, process_arguments, ready, go, results))
               for ready, process_arguments in zip(readies, arguments)]
    for worker in workers:
        worker.start()
    for ready in readies:
        if not _wait_warming(ready, warm) and results.empty():
            raise RuntimeError("%s: clients not ready" % scenario)
    go.set()
    measured = during() if during else None
    outcomes = [results.get(timeout=_CLIENT_TIMEOUT) for _ in workers]
    for worker in workers:
        worker.join(30)
    return outcomes, measured


def _wait_warming(event, warm, timeout=_CLIENT_TIMEOUT):
    """Wait for `event`, calling `warm()` every 0.2 s meanwhile; False on timeout."""
    deadline = time.monotonic() + timeout
    while not event.wait(0.2 if warm else timeout):
        if time.monotonic() > deadline:
            return False
        warm()
    return True


# -- the scenarios (in the parent: start clients, measure the server) -------

def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else None


def _errors(outcomes):
    return [outcome["error"] for outcome in outcomes if "error" in outcome]


def _rate_result(outcomes, count):
    started = min(outcome["started"] for outcome in outcomes)
    finished = max(outcome["finished"] for outcome in outcomes)
    latencies = [value for outcome in outcomes for value in outcome["latencies"]]
    return {"count": count, "elapsed": finished - started, "rate": count / (finished - started),
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000}


def scenario_pingpong(server, options):
    outcomes, _ = run_clients("pingpong", server.url(), {"round_trips": 5000, "size": 64}, 1)
    return outcomes, lambda: _rate_result(outcomes, 5000)


def scenario_concurrent(server, options):
    outcomes, _ = run_clients("concurrent", server.url(),
                              {"connections": 25, "round_trips": 200, "size": KIB}, 2)
    return outcomes, lambda: _rate_result(outcomes, 50 * 200)


def scenario_churn(server, options):
    outcomes, _ = run_clients("churn", server.url(),
                              {"connections": 250, "parallel": 8, "size": 64}, 2)

    def result():
        rates = _rate_result(outcomes, sum(len(outcome["latencies"]) for outcome in outcomes))
        rates["failures"] = sum(outcome["failures"] for outcome in outcomes)
        rates["failure_examples"] = [e for outcome in outcomes for e in outcome["failure_examples"]]
        return rates
    return outcomes, result


def scenario_large(server, options):
    sizes = [MIB, 16 * MIB]
    outcomes, _ = run_clients("large", server.url(), {"sizes": sizes, "repetitions": 3}, 1)

    def result():
        times = outcomes[0]["times"]
        summary = {}
        for size in sizes:
            runs = times.get(str(size), [])
            failed = [run for run in runs if isinstance(run, str)]
            key = "%dMiB" % (size // MIB)
            summary[key + "_ms"] = None if failed or not runs else \
                statistics.median(runs) * 1000
            if failed:
                summary[key + "_failure"] = failed[0]
        return summary
    return outcomes, result


def scenario_idle(server, options):
    connections, hold = options.idle_connections, options.idle_seconds
    baseline = server.rss()
    baseline_used = psutil.virtual_memory().used

    def during():
        # Halfway through the hold: every connection and PHP process is up.
        time.sleep(hold / 2)
        return {"rss": server.rss(), "php_uss": server.php_uss(),
                "used": psutil.virtual_memory().used}

    outcomes, held = run_clients("idle", server.url(),
                                 {"connections": connections // 2, "hold": hold,
                                  "interval": 10, "size": 64}, 2, during)

    def result():
        return {"connections": connections,
                "dropped": sum(outcome["dropped"] for outcome in outcomes),
                "bridge_kib_per_connection": (held["rss"] - baseline) / connections / KIB,
                "bridge_rss_mib": held["rss"] / MIB,
                "php_uss_mib": held["php_uss"] / MIB,
                "machine_used_delta_mib": (held["used"] - baseline_used) / MIB}
    return outcomes, result


def scenario_stream(server, options):
    seconds = 10

    def during():
        cpu_before = server.cpu_seconds()
        time.sleep(seconds)
        return {"cpu": server.cpu_seconds() - cpu_before}

    outcomes, cpu = run_clients("stream", server.url("stream"), {"seconds": seconds}, 1, during)

    def result():
        outcome = outcomes[0]
        megabytes = outcome["bytes"] / 1e6
        return {"mb_per_s": megabytes / (outcome["finished"] - outcome["started"]),
                "bridge_cpu_s_per_gb": cpu["cpu"] / (megabytes / 1000) if megabytes else None}
    return outcomes, result


def scenario_fanout(server, options, rate=None, publishers=1):
    """1,000 subscribers of one channel, 200 publications as fast as the API takes them
    (or `rate` a second) from `publishers` in turn, each waiting for its last answer;
    every delivery checked, publish-to-delivery latency."""
    subscribers, publications, processes = options.fanout_subscribers, 200, 2
    share = subscribers // processes
    paths = server.subscriber_paths(0, subscribers)
    publisher = server.publisher()
    context = multiprocessing.get_context("fork")
    received = [context.Event() for _ in range(processes)]
    release = context.Event()
    started = {}

    def publish_from(number, each_publisher):
        for sequence in range(number, publications, publishers):
            if rate:
                time.sleep(max(0.0, started["time"] + sequence / rate - time.monotonic()))
            each_publisher.publish([sequence, time.monotonic()])

    def during():
        cpu_before = server.cpu_seconds()
        others = [server.publisher() for _ in range(publishers - 1)]
        started["time"] = time.monotonic()
        threads = [threading.Thread(target=publish_from, args=(number, each))
                   for number, each in enumerate(others, 1)]
        for thread in threads:
            thread.start()
        publish_from(0, publisher)
        for thread in threads:
            thread.join()
        started["published"] = time.monotonic()
        for each in others:
            each.close()
        for event in received:
            event.wait(_CLIENT_TIMEOUT)  # a client that failed says so in its outcome
        server_cpu = server.cpu_seconds() - cpu_before  # the subscribers not yet closed
        release.set()
        return {"server_cpu": server_cpu}

    outcomes, measured = run_clients(
        "fanout", server.url(), [{"paths": paths[number * share:(number + 1) * share],
                                  "publications": publications, "publishers": publishers,
                                  "settle": 10,
                                  "received": received[number], "release": release}
                                 for number in range(processes)],
        processes, during, warm=lambda: publisher.publish([-1, time.monotonic()]))
    server_cpu = measured["server_cpu"]
    publisher.close()

    def result():
        latencies = [value for outcome in outcomes for value in outcome["latencies"]]
        finished = max(outcome["finished"] or 0 for outcome in outcomes)
        deliveries = len(latencies)
        return {"deliveries": deliveries,
                "missing": sum(outcome["missing"] for outcome in outcomes),
                "disorder": sum(outcome["disorder"] for outcome in outcomes),
                "closed": sum(outcome["closed"] for outcome in outcomes),
                "publications_per_s": publications / (started["published"] - started["time"]),
                "deliveries_per_s": deliveries / (finished - started["time"]),
                "p50_ms": percentile(latencies, 0.50) * 1000,
                "p99_ms": percentile(latencies, 0.99) * 1000,
                "server_cpu_us_per_delivery": server_cpu / max(deliveries, 1) * 1e6}
    return outcomes, result


def scenario_fanout_paced(server, options):
    return scenario_fanout(server, options, rate=100)


# A web app publishes from many processes at once (PHP-FPM workers, queue workers): the
# fan-out through Redis at full speed is measured with sixteen publishers, on both sides
# (the paced one with one publisher, as the other paced scenario).
CLUSTER_PUBLISHERS = 16


def scenario_fanout_publishers(server, options):
    return scenario_fanout(server, options, publishers=CLUSTER_PUBLISHERS)


def scenario_idle_subscribers(server, options):
    """Server memory per subscriber that only listens: RSS after 200 subscribers, then
    after `--idle-subscribers` more (each one warmed by a publication)."""
    warmup, count = 200, options.idle_subscribers
    paths = server.subscriber_paths(0, warmup + count)
    publisher = server.publisher()
    context = multiprocessing.get_context("fork")
    phase, all_open, done = context.Event(), context.Event(), context.Event()
    warm = lambda: publisher.publish([-1, time.monotonic()])  # noqa: E731

    def during():
        time.sleep(1)  # what the warm-up subscribers left behind is let go
        before = server.rss()
        phase.set()
        if not _wait_warming(all_open, warm):
            raise RuntimeError("idle subscribers not all subscribed")
        time.sleep(1)
        after = server.rss()
        done.set()
        return {"before": before, "after": after}

    outcomes, held = run_clients("idle-subscribers", server.url(),
                                 {"paths": paths, "warmup": warmup, "phase": phase,
                                  "all_open": all_open, "done": done}, 1, during, warm)
    publisher.close()

    def result():
        return {"subscribers": count, "dropped": sum(outcome["dropped"] for outcome in outcomes),
                "kib_per_subscriber": (held["after"] - held["before"]) / count / KIB,
                "server_rss_mib": held["after"] / MIB}
    return outcomes, result


SCENARIOS = {
    "pingpong": scenario_pingpong, "concurrent": scenario_concurrent,
    "churn": scenario_churn, "large": scenario_large, "idle": scenario_idle,
    "stream": scenario_stream,
    "framed-pingpong": scenario_pingpong, "framed-concurrent": scenario_concurrent,
    "fanout": scenario_fanout, "fanout-paced": scenario_fanout_paced,
    "idle-subscribers": scenario_idle_subscribers,
    # The fan-out through Redis (--broker), against one node with its in-process broker.
    "fanout-redis": scenario_fanout_publishers, "fanout-cluster": scenario_fanout_publishers,
    "fanout-cluster-paced": scenario_fanout_paced,
}
# Publications to subscribers without PHP: greenbridge's channels against Pushpin's.
CHANNEL_SCENARIOS = ("fanout", "fanout-paced", "idle-subscribers")
# The same fan-out through Redis, against one node with its in-process broker: scenario ->
# the nodes over Redis.
CLUSTER_SCENARIOS = {"fanout-redis": 1, "fanout-cluster": 2, "fanout-cluster-paced": 2}


def servers_of(scenario):
    """What is measured in `scenario` and what it is compared with."""
    if scenario in CLUSTER_SCENARIOS:
        return (cluster_name(CLUSTER_SCENARIOS[scenario]), "greenbridge")
    return ("greenbridge", "pushpin" if scenario in CHANNEL_SCENARIOS else "websocketd")
# What the table shows for each scenario: (metric, label, higher is better).
HEADLINES = {
    "pingpong": [("rate", "round trips/s", True), ("p50_ms", "p50 ms", False),
                 ("p99_ms", "p99 ms", False),
                 ("server_cpu_us_per_op", "server CPU us per round trip", False)],
    "concurrent": [("rate", "round trips/s", True), ("p99_ms", "p99 ms", False),
                   ("server_cpu_us_per_op", "server CPU us per round trip", False)],
    "churn": [("rate", "connections/s", True), ("p50_ms", "p50 connect-to-echo ms", False),
              ("p99_ms", "p99 connect-to-echo ms", False), ("failures", "failures", False),
              ("server_cpu_us_per_op", "server CPU us per connection", False)],
    "large": [("1MiB_ms", "1 MiB round trip ms", False), ("16MiB_ms", "16 MiB round trip ms", False)],
    "idle": [("dropped", "dropped", False),
             ("bridge_kib_per_connection", "server KiB per connection", False),
             ("bridge_rss_mib", "server RSS MiB", False), ("php_uss_mib", "PHP USS MiB", False)],
    "stream": [("mb_per_s", "MB/s", True), ("bridge_cpu_s_per_gb", "server CPU s per GB", False)],
}
HEADLINES["fanout"] = [
    ("deliveries_per_s", "deliveries/s", True), ("p50_ms", "p50 publish-to-delivery ms", False),
    ("p99_ms", "p99 publish-to-delivery ms", False), ("missing", "missing", False),
    ("disorder", "out of order or twice", False),
    ("publications_per_s", "publications/s accepted", True),
    ("server_cpu_us_per_delivery", "server CPU us per delivery", False)]
HEADLINES["fanout-paced"] = [
    ("p99_ms", "p99 ms at 100 publications/s", False), ("p50_ms", "p50 ms", False),
    ("missing", "missing", False), ("disorder", "out of order or twice", False)]
HEADLINES["idle-subscribers"] = [
    ("kib_per_subscriber", "server KiB per idle subscriber", False),
    ("server_rss_mib", "server RSS MiB", False), ("dropped", "dropped", False)]
HEADLINES["fanout-redis"] = HEADLINES["fanout-cluster"] = HEADLINES["fanout"]
HEADLINES["fanout-cluster-paced"] = HEADLINES["fanout-paced"]
HEADLINES["framed-pingpong"] = HEADLINES["pingpong"]
HEADLINES["framed-concurrent"] = HEADLINES["concurrent"]


def run_once(scenario, name, options, log_dir):
    load_before = os.getloadavg()[0]
    # The framed- scenarios run greenbridge in framed mode with the PHP
    # library; websocketd (which has no such mode) runs the same as before.
    mode = "framed" if scenario.startswith("framed-") else "raw"
    if name == "pushpin":
        server = Pushpin(options, log_dir)
    elif scenario in CLUSTER_SCENARIOS and name != "greenbridge":
        server = Cluster(options, log_dir, CLUSTER_SCENARIOS[scenario])
    elif name == "websocketd":
        server = Websocketd(options, log_dir)
    else:
        server = Greenbridge(options, log_dir, mode,
                             channels=scenario in CHANNEL_SCENARIOS + tuple(CLUSTER_SCENARIOS))
    try:
        cpu_before = server.cpu_seconds()
        wall_before = time.monotonic()
        outcomes, summarise = SCENARIOS[scenario](server, options)
        server_cpu = server.cpu_seconds() - cpu_before
        wall = time.monotonic() - wall_before
    finally:
        server.stop()
    errors = _errors(outcomes)
    result = {"errors": errors} if errors else summarise()
    if "count" in result:
        result["server_cpu_us_per_op"] = server_cpu / result["count"] * 1e6
    result.update({
        "server_cpu_s": server_cpu, "wall_s": wall,
        "client_cpu_s": sum(outcome["client_cpu"] for outcome in outcomes),
        "client_processes": len(outcomes),
        "load_before": load_before, "load_after": os.getloadavg()[0]})
    return result


def median_of(runs, metric):
    values = [run[metric] for run in runs if isinstance(run.get(metric), (int, float))]
    return statistics.median(values) if values else None


def print_table(results):
    rows = [("scenario (against)", "metric", "greenbridge", "other", "gb / other")]
    for scenario, by_server in results["scenarios"].items():
        servers = servers_of(scenario)
        for metric, label, _higher in HEADLINES[scenario]:
            ours = median_of(by_server[servers[0]], metric)
            theirs = median_of(by_server[servers[1]], metric)
            ratio = "%.2f" % (ours / theirs) if ours is not None and theirs else "-"
            rows.append(("%s (%s)" % (scenario, servers[1]), label, _format(ours),
                         _format(theirs), ratio))
        for name in servers:
            for key in ("errors", "failure_examples", "1MiB_failure", "16MiB_failure"):
                seen = [str(run[key]) for run in by_server[name] if run.get(key)]
                if seen:
                    rows.append((scenario, "%s %s" % (name, key),
                                 "%s (%d of %d runs)" % (seen[0][:50], len(seen), len(by_server[name])),
                                 "", ""))
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    line = "  ".join("=" * width for width in widths)
    print(line)
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print(line)
    print(line)


def _format(value):
    if value is None:
        return "-"
    if isinstance(value, int) or value >= 100:
        return "%.0f" % value
    return "%.2f" % value if value >= 1 else "%.3f" % value


def draw_chart(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(scenario, metric, label) for scenario in results["scenarios"]
              for metric, label, _higher in HEADLINES[scenario][:2]]
    columns = 3
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for axis, (scenario, metric, label) in zip(axes.flat, panels):
        by_server = results["scenarios"][scenario]
        servers = servers_of(scenario)
        values = [[run[metric] for run in by_server[name]
                   if isinstance(run.get(metric), (int, float))] for name in servers]
        medians = [statistics.median(found) if found else 0 for found in values]
        axis.bar(servers, medians, color=["#2e7d32", "#1565c0"])
        for position, found in enumerate(values):
            axis.scatter([position] * len(found), found, color="black", s=8, zorder=3)
        axis.set_title("%s: %s" % (scenario, label), fontsize=9)
        axis.tick_params(labelsize=8)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    figure.suptitle("greenbridge (--workers %s) vs websocketd (same PHP) and Pushpin (channels), "
                    "%s; bars: medians, dots: runs"
                    % (results["workers"], results["machine"]["summary"]), fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.98))  # room for the title
    figure.savefig(path, dpi=110)


def machine_description():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    summary = "%d cores (%s), %.0f GiB, %s" % (os.cpu_count(), model, memory, platform.platform())
    php = subprocess.run(["php", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"summary": summary, "hostname": platform.node(), "python": platform.python_version(),
            "php": php}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--idle-repetitions", type=int, default=1)
    parser.add_argument("--idle-connections", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--fanout-subscribers", type=int, default=1000)
    parser.add_argument("--idle-subscribers", type=int, default=2000,
                        help="subscribers added after 200 in the idle-subscribers scenario")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help="comma list of scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--workers", default="auto", help="greenbridge --workers")
    parser.add_argument("--php", default="php")
    parser.add_argument("--output", default=os.path.join(REPO, "scripts", "bench-results"))
    parser.add_argument("--update", action="store_true",
                        help="replace only the scenarios run in the existing results.json")
    options = parser.parse_args()
    scenarios = options.only.split(",")
    programs = {"pushpin": "pushpin", "websocketd": "websocketd"}
    programs.update((cluster_name(nodes), "redis-server") for nodes in CLUSTER_SCENARIOS.values())
    for needed in {programs[name] for scenario in scenarios for name in servers_of(scenario)
                   if name in programs}:
        if shutil.which(needed) is None:
            parser.error("%s is not installed (scripts/setup.sh --bench)" % needed)
    # The client processes import picows; without it they would die silently.
    if importlib.util.find_spec("picows") is None:
        parser.error("picows is not installed (scripts/setup.sh --bench)")
    os.makedirs(options.output, exist_ok=True)
    log_dir = tempfile.mkdtemp(prefix="greenbridge-bench-")

    results_path = os.path.join(options.output, "results.json")
    results = {"machine": machine_description(), "workers": options.workers,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "scenarios": {}}
    if options.update and os.path.exists(results_path):
        with open(results_path) as existing:
            results["scenarios"] = json.load(existing)["scenarios"]
    for scenario in scenarios:
        repetitions = options.idle_repetitions if scenario == "idle" else options.repetitions
        servers = servers_of(scenario)
        runs = results["scenarios"][scenario] = {name: [] for name in servers}
        for repetition in range(repetitions):
            order = servers if repetition % 2 == 0 else servers[::-1]
            for name in order:
                run = run_once(scenario, name, options, log_dir)
                runs[name].append(run)
                print("%-10s %-11s #%d %s" % (scenario, name, repetition + 1,
                                              json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                                          for k, v in run.items()
                                                          if k != "latencies"})), flush=True)
    loads = [run[key] for by_server in results["scenarios"].values() for runs in by_server.values()
             for run in runs for key in ("load_before", "load_after")]
    results["load_average_1min"] = {"min": min(loads), "median": statistics.median(loads),
                                    "max": max(loads)}
    with open(results_path, "w") as output:
        json.dump(results, output, indent=1)
    print_table(results)
    print("1-minute load average during the runs: min %.1f, median %.1f, max %.1f"
          % tuple(results["load_average_1min"].values()))
    draw_chart(results, os.path.join(options.output, "chart.png"))
    print("raw results and chart in %s (server logs in %s)" % (options.output, log_dir))


if __name__ == "__main__":
    main()
