"""Resources come back: descriptors, child processes and memory after many connections."""

import re
import signal
import threading
from contextlib import ExitStack

import psutil
import pytest
from websockets.sync.client import connect

from support import ECHO_PHP, access_lines, stopped_log, wait_until


def churn(bridge, connections, parallel=16):
    """Open, one round trip, close; `parallel` at a time. Returns the failures."""
    failures = []
    counter = iter(range(connections))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                number = next(counter, None)
            if number is None:
                return
            try:
                with connect(bridge.url()) as ws:
                    ws.send(b"%d" % number)
                    assert ws.recv(timeout=20) == b"%d" % number
            except Exception as error:  # collected and reported by the caller
                failures.append(repr(error))

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(900)
    assert not [thread for thread in threads if thread.is_alive()], "the churn did not end"
    return failures


def settle(server, bridge, baseline_fds, timeout=30):
    wait_until(lambda: not bridge.php_processes() and server.num_fds() <= baseline_fds,
               timeout, "no PHP and no descriptors over the idle server's")


def status(bridge, timeout=10):
    """Ask the server (SIGUSR1) what it holds: {"connections": n, "greenlets": n, ...}."""
    seen = len(bridge.lines)
    bridge.signal(signal.SIGUSR1)
    match = wait_until(lambda: next(filter(None, map(_STATUS.search, bridge.lines[seen:])), None),
                       timeout, "a status line after SIGUSR1")
    return {name: int(value) for name, value in match.groupdict().items()}


_STATUS = re.compile(r"status: (?P<connections>\d+) connections, (?P<handshakes>\d+) pending "
                     r"handshakes, (?P<greenlets>\d+) greenlets, (?P<descriptors>\d+) open")


def test_an_idle_connection_holds_only_its_own_and_its_pumps_greenlets(start_bridge):
    # Greenlets are most of an idle connection's memory: the connection's
    # own and its two pumps; the heartbeat and PHP's output need none.
    bridge = start_bridge(script=ECHO_PHP)
    idle = status(bridge)
    with ExitStack() as stack:
        held = [stack.enter_context(connect(bridge.url())) for _ in range(20)]
        for ws in held:
            ws.send(b"up")
            assert ws.recv(timeout=20) == b"up"
        during = status(bridge)
    assert during["connections"] == 20
    assert during["greenlets"] - idle["greenlets"] <= 3 * 20


@pytest.mark.timeout(1200)
def test_descriptors_processes_greenlets_and_memory_return_after_10000_connections(
        start_bridge):
    bridge = start_bridge(script=ECHO_PHP)
    server = psutil.Process(bridge.process.pid)
    idle_fds = server.num_fds()
    idle = status(bridge)

    assert churn(bridge, 1000) == []
    settle(server, bridge, idle_fds)
    rss_after_1000 = server.memory_info().rss

    assert churn(bridge, 9000) == []
    settle(server, bridge, idle_fds)
    assert bridge.php_processes() == []
    assert server.num_fds() == idle_fds
    after = status(bridge)
    assert after["connections"] == after["handshakes"] == 0
    # Start-up leaves a few short-lived greenlets; none may stay per connection.
    assert after["greenlets"] <= idle["greenlets"]
    rss_growth = server.memory_info().rss - rss_after_1000
    assert rss_growth < 5 * 1024 * 1024
    fds_after = server.num_fds()
    log = stopped_log(bridge)
    assert len(access_lines(log)) == 10000
    assert "Traceback" not in log
    print("\nchurn: descriptors %d -> %d, greenlets %d -> %d, RSS after 1,000 %.1f MiB, "
          "after 10,000 %+.2f MiB" % (idle_fds, fds_after, idle["greenlets"],
                                      after["greenlets"], rss_after_1000 / 2 ** 20,
                                      rss_growth / 2 ** 20))
