"""Fault injection: clients, PHP scripts and strangers that misbehave on purpose.

Each test breaks something with real PHP and real sockets, checks what the
user would see, and then checks that the server still serves a fresh client.
(Scenarios already covered in test_bridge.py and test_frames.py are not
repeated here.)
"""

import contextlib
import resource
import signal
import socket
import struct
import threading
import time
import uuid

import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from support import (ECHO_PHP, RawClient, frame, held_php_environment, read_until_closed,
                     stopped_log, upgrade_request, wait_until)

# An assertion failing in a helper thread fails the test.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


def abort(sock, reset):
    """Drop a TCP connection without a close frame: FIN, or RST when `reset`."""
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def access_line(bridge, connection_id=None, timeout=20):
    pattern = r"greenbridge\.access: \[%s\].*" % (connection_id or "[0-9a-f-]{36}")
    return bridge.wait_for_log(pattern, timeout=timeout).group(0)


# -- clients ------------------------------------------------------------------

@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_client_vanishing_without_close_frame_ends_its_php(start_bridge, reset):
    bridge = start_bridge()
    client = RawClient(bridge.port, "/?do=ignore_term")  # PHP that would run for ever
    client.sock.sendall(frame(0x2, b"x"))
    pid = int(client.read_frame()[1])
    abort(client.sock, reset)
    bridge.wait_no_php(timeout=20)
    assert not psutil.pid_exists(pid)
    assert "close=1006 'client disconnected without close frame'" in access_line(bridge)
    bridge.assert_serves()


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_client_leaving_while_php_does_not_read_is_noticed(start_bridge, reset):
    """The bridge is stuck writing a 32 MiB message to a PHP that stopped reading
    when the client goes."""
    bridge = start_bridge("--max-payload-size", str(64 * 1024 * 1024))
    client = RawClient(bridge.port, "/?do=sink&seconds=300")
    client.sock.settimeout(60)
    client.sock.sendall(frame(0x2, b"s" * 32 * 1024 * 1024))
    abort(client.sock, reset)
    bridge.wait_no_php(timeout=20)
    assert "close=1006 'client disconnected without close frame'" in access_line(bridge)
    bridge.assert_serves()


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_client_leaving_while_php_starts_ends_its_php(start_bridge, reset):
    """PHP slower to connect back than the client is patient (as on a starved machine)."""
    bridge = start_bridge("--php-connect-timeout", "120")
    client = RawClient(bridge.port, "/?do=never_connect")  # PHP sleeps 60 s instead
    wait_until(bridge.php_processes, 20, "PHP started")
    abort(client.sock, reset)
    bridge.wait_no_php(timeout=20)
    assert "close=1006 'client disconnected without close frame'" in access_line(bridge)
    bridge.wait_for_log("client left while PHP was starting")
    bridge.assert_serves()


def test_invalid_frame_then_fresh_connection_is_served(start_bridge):
    bridge = start_bridge()
    for bad_frame, code in [(frame(0x1, b"x", rsv=0x40), 1002), (frame(0x1, b"\xc3\x28"), 1007)]:
        client = RawClient(bridge.port)
        client.sock.sendall(bad_frame)
        assert client.read_close_code() == code
        client.close()
    bridge.wait_no_php()
    bridge.assert_serves()
    assert "Traceback" not in stopped_log(bridge)


def test_oversized_frame_header_is_refused_before_reading_it(start_bridge):
    """A header announcing 2**63 bytes: 1009 at once, nothing allocated."""
    bridge = start_bridge("--max-payload-size", "1000")
    client = RawClient(bridge.port)
    client.sock.sendall(struct.pack("!BBQ", 0x82, 0xFF, 2 ** 63 - 1) + b"mask")
    assert client.read_close_code() == 1009
    client.close()
    bridge.assert_serves()


def test_a_thousand_attempts_over_the_limit_get_503_and_spawn_nothing(start_bridge):
    bridge = start_bridge("--max-connections", "4")
    holders_stack = contextlib.ExitStack()
    holders = [holders_stack.enter_context(connect(bridge.url())) for _ in range(4)]
    for ws in holders:  # PHP starts after the 101: wait until each one answers
        ws.send(b"ready")
        assert ws.recv(timeout=30) == b"ready"
    php_before = {p.pid for p in bridge.php_processes()}
    statuses = []
    latencies = []
    flood_done = threading.Event()

    def attempt(count):
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", bridge.port), timeout=30) as sock:
                sock.sendall(upgrade_request())
                statuses.append(read_until_closed(sock).partition(b"\r\n")[0])

    def keep_talking(ws):
        while not flood_done.is_set():
            started = time.monotonic()
            ws.send(b"during the flood")
            assert ws.recv(timeout=30) == b"during the flood"
            latencies.append(time.monotonic() - started)

    talker = threading.Thread(target=keep_talking, args=(holders[0],))
    talker.start()
    try:
        flooders = [threading.Thread(target=attempt, args=(125,)) for _ in range(8)]
        for thread in flooders:
            thread.start()
        for thread in flooders:
            thread.join(300)
        assert not [thread for thread in flooders if thread.is_alive()], "the flood did not end"
        flood_done.set()
        talker.join(60)
        assert statuses == [b"HTTP/1.1 503 Service Unavailable"] * 1000
        assert {p.pid for p in bridge.php_processes()} == php_before
        assert latencies, "the open connection was not served during the flood"
        for ws in holders:
            ws.send(b"after the flood")
            assert ws.recv(timeout=10) == b"after the flood"
    finally:
        flood_done.set()
        holders_stack.close()
    bridge.wait_no_php()
    bridge.assert_serves()
    print("round trip during the flood: %d samples, max %.1f ms"
          % (len(latencies), 1000 * max(latencies)))


# -- PHP ----------------------------------------------------------------------

def test_php_closing_stdout_and_stderr_early_changes_nothing(start_bridge):
    bridge = start_bridge()
    with connect(bridge.url("/?do=close_output")) as ws:
        for number in range(5):
            ws.send(b"%d" % number)
            assert ws.recv(timeout=10) == b"%d" % number
    assert "close=1000 'client closed'" in access_line(bridge)
    bridge.wait_no_php()
    assert "Traceback" not in stopped_log(bridge)


def test_php_flooding_a_reading_client_keeps_bridge_memory_bounded(start_bridge):
    bridge = start_bridge()
    server = psutil.Process(bridge.process.pid)
    rss_before = server.memory_info().rss
    peak = rss_before
    chunks = 1600  # 100 MiB
    received = 0
    with connect(bridge.url("/?do=flood&chunks=%d" % chunks), max_size=None) as ws:
        while received < chunks * 65536:
            received += len(ws.recv(timeout=30))
            peak = max(peak, server.memory_info().rss)
    assert received == chunks * 65536
    assert peak - rss_before < 32 * 1024 * 1024
    bridge.assert_serves()


# -- the back-connection port ----------------------------------------------------

def send_id(bridge, connection_id):
    """Connect to the back-connection port as PHP would; True if the bridge kept the socket.

    A whole ID line leaves the bridge nothing to wait for: it pairs the socket (and
    keeps it) or refuses it (and closes it) at once; still open after 10 s is kept."""
    with socket.create_connection(("127.0.0.1", bridge.tcp_port), timeout=10) as sock:
        sock.sendall(connection_id.encode() + b"\n")
        try:
            return sock.recv(1) != b""
        except socket.timeout:
            return True


def test_a_used_id_is_refused_while_and_after_its_connection_runs(start_bridge):
    bridge = start_bridge()
    with contextlib.ExitStack() as stack:
        ws, env = held_php_environment(stack, bridge.url())
        connection_id = env["WSS_CONNECTION_ID"]
        assert not send_id(bridge, connection_id)
        bridge.wait_for_log("refused: unknown or already used ID %s" % connection_id)
        ws.send(b"the real PHP still answers")
        assert ws.recv(timeout=10) == b"the real PHP still answers"
    access_line(bridge, connection_id)
    bridge.wait_no_php()
    assert not send_id(bridge, connection_id)  # (its log line may be held back: one a second)
    bridge.assert_serves()


def test_idle_back_connections_are_closed_and_hold_nothing_up(start_bridge):
    bridge = start_bridge()
    idle = [socket.create_connection(("127.0.0.1", bridge.tcp_port), timeout=30)
            for _ in range(50)]
    try:
        bridge.assert_serves()  # PHP pairs while 50 strangers sit on the port
        for sock in idle:
            assert sock.recv(1) == b""  # closed by the bridge after the ID timeout
    finally:
        for sock in idle:
            sock.close()
    bridge.wait_for_log(r"back-connection from 127\.0\.0\.1:\d+: no ID line within 2s")
    bridge.assert_serves()


def test_php_sending_its_id_line_a_second_late_still_pairs(start_bridge):
    """The ID line deadline is short, but not so short that a slow PHP misses it."""
    bridge = start_bridge()
    with connect(bridge.url("/?id_delay_ms=1000")) as ws:
        ws.send(b"late but real")
        assert ws.recv(timeout=10) == b"late but real"
    assert "refused" not in stopped_log(bridge)


def flood_with_idle_sockets(port, stop, opened, most=1500):
    """Open sockets that send nothing and hold them, a few hundred a second, until `stop`."""
    try:
        while not stop.is_set() and len(opened) < most:
            try:
                opened.append(socket.create_connection(("127.0.0.1", port), timeout=1))
            except OSError:  # the server's backlog is full: try again
                continue
            stop.wait(0.002)  # pace, so as not to starve the shared machine
        stop.wait()
    finally:
        for sock in opened:
            sock.close()


def test_flood_of_idle_back_connections_leaves_descriptors_for_real_clients(start_bridge):
    """Strangers keep opening silent back-connections against a descriptor limit that
    leaves room for 60 more; PHP still pairs and a real client gets its echo."""
    bridge = start_bridge("--max-processes", "4")  # 16 unidentified back-connections at most
    server = psutil.Process(bridge.process.pid)
    server.rlimit(resource.RLIMIT_NOFILE,
                  (server.num_fds() + 60, server.rlimit(resource.RLIMIT_NOFILE)[1]))
    stop, opened = threading.Event(), []
    flood = threading.Thread(target=flood_with_idle_sockets, args=(bridge.tcp_port, stop, opened))
    flood.start()
    try:
        # Over the limit several times.
        wait_until(lambda: len(opened) >= 200, 20, lambda: "200 idle sockets open (%d are)"
                   % len(opened))
        for _ in range(3):
            started = time.monotonic()
            with connect(bridge.url(), open_timeout=10) as ws:
                ws.send(b"under the flood")
                assert ws.recv(timeout=10) == b"under the flood"
            print("echo under the flood after %.2fs" % (time.monotonic() - started))
    finally:
        stop.set()
        flood.join()
    bridge.wait_for_log(r"16 back-connections pending: dropping the oldest")
    bridge.assert_serves()
    log = stopped_log(bridge)
    assert "Too many open files" not in log
    assert "Traceback" not in log


@pytest.mark.timeout(600)
def test_random_ids_never_pair(start_bridge):
    bridge = start_bridge()
    count, parallel = 100_000, 2
    kept = []
    tried = [0] * parallel
    give_up = threading.Event()

    def stranger(number, share):
        while tried[number] < share and not give_up.is_set():
            with socket.create_connection(("127.0.0.1", bridge.tcp_port), timeout=30) as sock:
                sock.sendall(str(uuid.uuid4()).encode() + b"\n")
                try:
                    refused = sock.recv(1) == b""
                except socket.timeout:
                    refused = False
                if not refused:
                    kept.append(sock.getsockname())
            tried[number] += 1

    # A real connection waits for its PHP while the strangers guess.
    with connect(bridge.url(), ping_interval=None) as ws:
        threads = [threading.Thread(target=stranger, args=(number, count // parallel))
                   for number in range(parallel)]
        for thread in threads:
            thread.start()
        def strangers_done_while_talking():
            # Talk meanwhile (an idle PHP stream times out after 60 s on its own).
            ws.send(b"unharmed")
            assert ws.recv(timeout=30) == b"unharmed"
            for thread in threads:
                thread.join(5)
            return not any(thread.is_alive() for thread in threads)

        try:
            wait_until(strangers_done_while_talking, 540,
                       lambda: "the strangers trying %d IDs (%d tried)" % (count, sum(tried)))
        finally:
            give_up.set()  # past the deadline, or the talk failed
            for thread in threads:
                thread.join(60)
    assert sum(tried) == count, "the strangers tried %d IDs of %d in time" % (sum(tried), count)
    assert kept == []
    bridge.wait_for_log(r"refused: unknown or already used ID .* \(\d+ more like it not logged\)")
    bridge.assert_serves()


# -- the process ------------------------------------------------------------------

def test_sigterm_with_200_open_connections(start_bridge):
    bridge = start_bridge("--max-connections", "300", "--max-processes", "300",
                          "--shutdown-timeout", "5", script=ECHO_PHP)
    codes = []
    with contextlib.ExitStack() as stack:
        clients = []
        for number in range(200):
            ws = stack.enter_context(connect(bridge.url(), open_timeout=60))
            ws.send(b"%d" % number)
            assert ws.recv(timeout=60) == b"%d" % number
            clients.append(ws)
        php = bridge.php_processes()
        assert len(php) == 200
        bridge.signal(signal.SIGTERM)
        for ws in clients:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=60)
            codes.append(closed.value.rcvd.code if closed.value.rcvd else None)
    assert codes == [1001] * 200
    assert bridge.process.wait(60) == 0
    assert not [p for p in php if p.is_running()]


def most_alive_at_once(process_log):
    """The most PHP processes alive at once, replaying the starts and ends they recorded
    (scenario.php with GREENBRIDGE_TEST_PROCESS_LOG): no moment between two samples is missed."""
    alive = most = 0
    for line in process_log.read_text().splitlines():
        alive += 1 if line.startswith("start ") else -1
        most = max(most, alive)
    return most


def test_burst_of_200_never_exceeds_max_processes(start_bridge, tmp_path):
    """200 clients at once; each one admitted holds its connection, its PHP answering, until
    all 200 have their answer: exactly 50 are admitted, 50 PHP processes start (each records
    its start and end), and so any PHP started while they run shows as a 51st at once."""
    process_log = tmp_path / "php-processes"
    bridge = start_bridge("--max-processes", "50", "--max-connections", "300",
                          env={"GREENBRIDGE_TEST_PROCESS_LOG": str(process_log)})
    outcomes = []
    attempting = threading.Barrier(200)
    all_answered = threading.Barrier(200, timeout=120)

    def client():
        try:
            attempting.wait()
            try:
                with connect(bridge.url(), open_timeout=60) as ws:
                    ws.send(b"up")
                    assert ws.recv(timeout=60) == b"up"  # its PHP runs
                    outcomes.append(101)
                    all_answered.wait()
            except InvalidStatus as refused:
                outcomes.append((refused.response.status_code,
                                 bool(refused.response.headers.get("Retry-After"))))
                all_answered.wait()
        except BaseException:
            all_answered.abort()  # the others stop waiting: the test fails at once
            raise

    clients = [threading.Thread(target=client) for _ in range(200)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(180)
    assert not [thread for thread in clients if thread.is_alive()]
    assert outcomes.count(101) == 50
    assert outcomes.count((503, True)) == 150
    bridge.wait_no_php(timeout=30)
    assert process_log.read_text().count("start ") == 50  # one PHP per admitted connection
    assert most_alive_at_once(process_log) == 50
    bridge.assert_serves()
