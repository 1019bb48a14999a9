"""--workers: pre-forked servers sharing one port, global limits, replacement, shutdown."""

import json
import multiprocessing
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from greenbridge.cli import parse_config
from greenbridge.shared import SharedCounters
from support import (ECHO_PHP, access_lines, held_php_environment, stopped_log, wait_until,
                     wait_workers)


def open_env_connection(stack, bridge):
    """A held connection whose PHP reports its environment (which worker spawned it)."""
    ws, env = held_php_environment(stack, bridge.url())
    return ws, int(env["WSS_TCP_PORT"])


def test_two_workers_serve_connections_and_shut_down_cleanly(start_bridge):
    bridge = start_bridge("--workers", "2", "--shutdown-timeout", "1")
    workers = wait_workers(bridge, [1, 2])
    worker_ports = {port for _pid, port in workers.values()}
    assert len(worker_ports) == 2, "each worker has its own back-connection port"
    assert {worker.pid for worker in bridge.workers()} == {pid for pid, _ in workers.values()}

    held, seen_ports = [], set()
    with ExitStack() as stack:
        # The kernel hands each connection to whichever worker accepts first;
        # open them 8 at a time until both workers have some (bounded).
        with ThreadPoolExecutor(8) as pool:
            for _ in range(6):
                for ws, port in pool.map(lambda _: open_env_connection(stack, bridge), range(8)):
                    held.append(ws)
                    seen_ports.add(port)
                if seen_ports == worker_ports:
                    break
        assert seen_ports == worker_ports
        for ws in held:
            ws.send(b"still there?")
            assert ws.recv(timeout=20) == b"still there?"

        assert bridge.stop() == 0
        for ws in held:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=20)
            assert closed.value.rcvd.code == 1001
        bridge.wait_no_php()
        assert bridge.workers() == []
        for number in (1, 2):
            assert re.search(r"worker %d \(pid \d+\) ended \(exit status 0\)" % number, bridge.log)
        # Both workers closed their open connections with 1001 at the deadline.
        assert bridge.log.count("close=1001") == len(held)
        # Every line a worker logs names it; the arbiter's lines name none.
        access_lines = [line for line in bridge.lines if "close=1001" in line]
        assert all(re.search(r" worker [12] INFO greenbridge\.access: ", line)
                   for line in access_lines)
        assert {re.search(r" worker ([12]) INFO", line).group(1) for line in access_lines} \
            == {"1", "2"}
        for number in (1, 2):
            assert re.search(r" worker %d INFO greenbridge\.server: greenbridge worker %d \(pid"
                             % (number, number), bridge.log)
        assert re.search(r"\d INFO greenbridge\.workers: greenbridge arbiter", bridge.log)


def test_json_log_lines_name_their_worker(start_bridge):
    bridge = start_bridge("--workers", "2", "--log-format", "json", script=ECHO_PHP)
    wait_workers(bridge, [1, 2])
    entries = [json.loads(line) for line in stopped_log(bridge).splitlines()]
    listening = [entry for entry in entries if "listening on ws://" in entry["message"]]
    assert sorted(entry["worker"] for entry in listening) == [1, 2]
    arbiter = [entry for entry in entries if entry["logger"] == "greenbridge.workers"]
    assert len(arbiter) >= 3  # its start, and the end of each worker
    assert [entry for entry in arbiter if "worker" in entry] == []


def test_limits_are_global_across_workers(start_bridge):
    bridge = start_bridge("--workers", "2", "--max-connections", "3", script=ECHO_PHP)
    wait_workers(bridge, [1, 2])
    with ExitStack() as stack:
        held = [stack.enter_context(connect(bridge.url(), open_timeout=20)) for _ in range(3)]
        for ws in held:
            ws.send(b"x")
            assert ws.recv(timeout=20) == b"x"
        # Per-worker limits would let some of these through on the other worker.
        for _ in range(10):
            with pytest.raises(InvalidStatus) as refused:
                connect(bridge.url(), open_timeout=20)
            assert refused.value.response.status_code == 503
    # The slots come back when the connections end.
    wait_until(lambda: bridge.log.count("close=1000") == 3, timeout=10,
               what="three access lines")
    bridge.wait_no_php()
    with connect(bridge.url(), open_timeout=20) as ws:
        ws.send(b"again")
        assert ws.recv(timeout=20) == b"again"
    assert len(access_lines(stopped_log(bridge))) == 4  # the ten refused never ran


def test_a_dead_worker_is_replaced(start_bridge):
    bridge = start_bridge("--workers", "2", script=ECHO_PHP)
    workers = wait_workers(bridge, [1, 2])
    killed_pid, killed_port = workers[1]
    already = len(bridge.lines)
    [killed] = [worker for worker in bridge.workers() if worker.pid == killed_pid]
    killed.send_signal(signal.SIGKILL)
    bridge.wait_for_log(r"worker 1 \(pid %d\) ended \(killed by SIGKILL\); starting a new one"
                        % killed_pid)
    replacement = wait_workers(bridge, [1], after=already)
    new_pid, new_port = replacement[1]
    assert new_pid != killed_pid
    assert new_port == killed_port, "the replacement takes over the back-connection socket"
    assert len(bridge.workers()) == 2
    for _ in range(6):
        with connect(bridge.url(), open_timeout=20) as ws:
            ws.send(b"ping")
            assert ws.recv(timeout=20) == b"ping"
    assert bridge.stop() == 0


def test_workers_option_values(tmp_path):
    script = tmp_path / "handler.php"
    script.write_text("<?php\n")
    base = ["-e", "php", "-s", str(script)]
    assert parse_config(base, {}).workers == 1
    assert parse_config(base + ["--workers", "auto"], {}).workers == multiprocessing.cpu_count()
    assert parse_config(base, {"WSS_CONFIG_WORKERS": "3"}).workers == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as exited:
            parse_config(base + ["--workers", bad], {})
        assert exited.value.code == 2
    with pytest.raises(SystemExit):
        parse_config(base + ["--workers", "4", "--tcp-port", "65534"], {})


def _take_slots(counters, row, attempts, results):
    counters.use_row(row)
    taken = sum(counters.add_if_below("open_connections", 500)[0] for _ in range(attempts))
    results.put((row, taken))


def test_shared_counters_never_exceed_a_limit_across_processes():
    counters = SharedCounters(["open_connections"], rows=4)
    results = multiprocessing.get_context("fork").Queue()
    racers = [multiprocessing.get_context("fork").Process(
        target=_take_slots, args=(counters, row, 400, results)) for row in range(4)]
    for racer in racers:
        racer.start()
    taken = [count for _row, count in sorted(results.get(timeout=60) for _ in racers)]
    for racer in racers:
        racer.join(60)
    assert sum(taken) == 500
    assert counters.total("open_connections") == 500
    assert counters.per_row("open_connections") == taken
    counters.clear_row(0)
    assert counters.total("open_connections") == 500 - taken[0]


def test_workers_drain_and_exit_when_the_arbiter_is_killed(start_bridge):
    bridge = start_bridge("--workers", "2", "--shutdown-timeout", "1")
    workers = wait_workers(bridge, [1, 2])
    worker_pids = {pid for pid, _port in workers.values()}
    with ExitStack() as stack:
        held = [open_env_connection(stack, bridge)[0] for _ in range(4)]
        php = bridge.php_processes()
        assert len(php) == len(held)
        # Orphans are no longer the server's children: watch them by PID.
        watched = [psutil.Process(pid) for pid in worker_pids] + php
        bridge.process.kill()  # SIGKILL: the arbiter gets no chance to pass anything on
        bridge.process.wait(10)
        codes = []
        for ws in held:
            try:
                ws.recv(timeout=30)
            except ConnectionClosed as closed:
                codes.append(closed.rcvd.code if closed.rcvd else None)
            except TimeoutError:
                codes.append("open")
        try:
            wait_until(lambda: not any(_alive(process) for process in watched), 30,
                       lambda: "workers and PHP gone (left: %s)"
                       % [process.pid for process in watched if _alive(process)])
        finally:
            for process in watched:  # the test failed: end what it started, by PID
                if _alive(process):
                    process.kill()
        assert codes == [1001] * len(held), "workers drain as on SIGTERM"


def _alive(process):
    """Running, not a zombie (an orphan's zombie waits for whoever adopted it)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
