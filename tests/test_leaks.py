"""Resources come back: descriptors, child processes and memory after many connections."""

import threading
import time

import psutil
from websockets.sync.client import connect

from conftest import ECHO_PHP


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
        thread.join(300)
    return failures


def settle(server, bridge, baseline_fds, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not bridge.php_processes() and server.num_fds() <= baseline_fds:
            return
        time.sleep(0.1)


def test_descriptors_processes_and_memory_return_after_churn(start_bridge):
    bridge = start_bridge(script=ECHO_PHP)
    server = psutil.Process(bridge.process.pid)
    idle_fds = server.num_fds()

    assert churn(bridge, 300) == []
    settle(server, bridge, idle_fds)
    rss_warm = server.memory_info().rss

    assert churn(bridge, 1000) == []
    settle(server, bridge, idle_fds)
    assert bridge.php_processes() == []
    assert server.num_fds() == idle_fds
    assert server.memory_info().rss - rss_warm < 5 * 1024 * 1024
    assert bridge.log.count("greenbridge.access") == 1300
    assert "Traceback" not in bridge.log
