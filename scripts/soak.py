#!/usr/bin/env python3
"""Soak test: many connections each exchanging a message every second, for a long time.

    .venv/bin/python scripts/soak.py                    # 500 connections, 10 minutes
    .venv/bin/python scripts/soak.py --duration 30      # what CI runs

Starts its own greenbridge (conf/raw-echo.php, loopback, free ports), opens the
connections, and every second each one sends a message and waits for its
echo. Prints one JSON object with the results and exits 1 if any connection
dropped, any echo was wrong, or the server's memory grew by more than
--max-growth-mib between the end of the ramp-up and the end of the run.

A dropped connection is counted by who ended it: the client's own timeout
("client_timeouts": on a starved machine this is the soak giving up, not the
server), a close from the server ("server_closes", by code and reason), a
refused upgrade, or a TCP connection lost without a close frame. The report
also gives the load average, how long the first echo took (it waits for PHP
to start), latencies during and after the ramp-up, and the server's warning
lines counted by kind. Needs the test tools (scripts/setup.sh --test).
"""

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LISTENING = re.compile(r"listening on ws://[\d.]+:(\d+) ")
_PROBLEM_LINE = re.compile(r" ((?:WARNING|ERROR|CRITICAL) .*)")
_LOG_NOISE = re.compile(r"\[[0-9a-f-]{36}\]|\d+(\.\d+)?")

# The client's own patience. The first echo waits for PHP to start, which a
# starved machine can make slow; the server's own limit is --php-connect-timeout.
OPEN_TIMEOUT = 60
ECHO_TIMEOUT = 30


def start_server(connections):
    """greenbridge on free loopback ports; returns (process, WebSocket port, its log lines)."""
    limit = str(connections + 16)
    server = subprocess.Popen(
        [sys.executable, "-m", "greenbridge", "-H", "127.0.0.1", "-P", "0", "-e", "php",
         "-s", os.path.join(REPO, "conf", "raw-echo.php"), "-M", limit, "-m", limit],
        cwd=REPO, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    # Drain the log as it comes, so the server never blocks on a full pipe.
    threading.Thread(target=lambda: lines.extend(server.stderr), daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        for line in list(lines):
            match = _LISTENING.search(line)
            if match:
                return server, int(match.group(1)), lines
        time.sleep(0.1)
    server.kill()
    raise SystemExit("soak: greenbridge did not start:\n" + "".join(lines))


async def exchange(port, number, start_delay, stop_at, results):
    """One connection: a message a second until the stop time, every echo checked.

    A connection that ends early is counted by who ended it: the client's own
    timeout (on a starved machine), the server (its close code), a refused
    upgrade, or a TCP connection lost without a close frame.
    """
    await asyncio.sleep(start_delay)
    stage = "opening"
    opened = time.monotonic()
    try:
        async with connect("ws://127.0.0.1:%d/" % port, open_timeout=OPEN_TIMEOUT,
                           ping_interval=None) as ws:
            stage = "first echo"
            sequence = 0
            while not stop_at or time.monotonic() < stop_at[0]:
                message = b"%d:%d" % (number, sequence)
                started = time.monotonic()
                await ws.send(message)
                echoed = await asyncio.wait_for(ws.recv(), ECHO_TIMEOUT)
                if sequence:  # split: the ramp-up also starts PHP processes
                    results["latencies" if stop_at else "ramp_latencies"].append(
                        time.monotonic() - started)
                else:  # the first answer also waited for PHP to start
                    results["first_echoes"].append(time.monotonic() - opened)
                    results["established"] += 1
                    stage = "echo"
                results["messages"] += 1
                results["wrong"] += echoed != message
                sequence += 1
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    except TimeoutError:
        outcome = ("client_timeouts", "waiting for the %s" % stage if stage != "opening"
                   else "opening (%gs)" % OPEN_TIMEOUT)
    except ConnectionClosed as closed:
        outcome = ("server_closes", "%d %s" % (closed.rcvd.code, closed.rcvd.reason)) \
            if closed.rcvd else ("lost", "TCP closed without a close frame")
    except InvalidStatus as refused:
        outcome = ("refused", "HTTP %d" % refused.response.status_code)
    except Exception as error:  # counted: the soak reports, it does not stop
        outcome = ("other", repr(error))
    else:
        return
    kind, detail = outcome
    results[kind][detail] = results[kind].get(detail, 0) + 1
    print("soak: connection %d dropped (%s: %s) after %.1fs"
          % (number, kind, detail, time.monotonic() - opened), file=sys.stderr)


DROP_KINDS = ("client_timeouts", "server_closes", "refused", "lost", "other")


def summarize_log(lines):
    """Warning and error lines of the server's log, counted by kind (IDs and numbers masked)."""
    kinds = {}
    for line in lines:
        match = _PROBLEM_LINE.search(line)
        if not match:
            continue
        kind = _LOG_NOISE.sub("N", match.group(1).strip())
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items(), key=lambda item: -item[1])[:10])


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


async def run(options):
    server, port, log_lines = start_server(options.connections)
    results = {"established": 0, "messages": 0, "wrong": 0, "latencies": [], "ramp_latencies": [],
               "first_echoes": [],
               "client_timeouts": {}, "server_closes": {}, "refused": {}, "lost": {}, "other": {}}
    stop_at = []  # the stop time, set once every connection is established or dropped
    load_at_start = os.getloadavg()[0]
    try:
        process = psutil.Process(server.pid)
        clients = asyncio.gather(*(
            exchange(port, number, options.ramp * number / options.connections, stop_at,
                     results) for number in range(options.connections)))
        ramp_deadline = time.monotonic() + options.ramp + OPEN_TIMEOUT + ECHO_TIMEOUT
        while results["established"] + dropped(results) < options.connections and \
                time.monotonic() < ramp_deadline:
            await asyncio.sleep(0.5)
        php_at_start = len(process.children())
        stop_at.append(time.monotonic() + options.duration)
        rss_samples = [process.memory_info().rss]
        while not clients.done():
            await asyncio.sleep(1)
            rss_samples.append(process.memory_info().rss)
        await clients
    finally:
        server.send_signal(signal.SIGTERM)
        exit_status = server.wait(60)
    rss_start, rss_end = rss_samples[0], rss_samples[-1]
    growth_mib = (rss_end - rss_start) / 2 ** 20
    tracebacks = sum("Traceback" in line for line in log_lines)
    report = {
        "connections": options.connections,
        "duration_s": options.duration,
        "load_average_at_start": round(load_at_start, 2),
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "established": results["established"],
        "php_processes_at_start": php_at_start,
        "messages": results["messages"],
        "dropped": dropped(results),
        # Who ended the dropped connections, and why.
        "client_timeouts": results["client_timeouts"],
        "server_closes": results["server_closes"],
        "refused": results["refused"],
        "lost": results["lost"],
        "other": results["other"],
        "wrong_echoes": results["wrong"],
        "first_echo_p50_s": round(percentile(results["first_echoes"], 0.5), 2),
        "first_echo_max_s": round(max(results["first_echoes"], default=0.0), 2),
        "ramp_latency_p99_ms": round(1000 * percentile(results["ramp_latencies"], 0.99), 2),
        "latency_p50_ms": round(1000 * percentile(results["latencies"], 0.5), 2),
        "latency_p99_ms": round(1000 * percentile(results["latencies"], 0.99), 2),
        "latency_max_ms": round(1000 * max(results["latencies"], default=0.0), 2),
        "rss_start_mib": round(rss_start / 2 ** 20, 1),
        "rss_end_mib": round(rss_end / 2 ** 20, 1),
        "rss_max_mib": round(max(rss_samples) / 2 ** 20, 1),
        "rss_growth_mib": round(growth_mib, 2),
        "tracebacks_in_log": tracebacks,
        "server_warnings": summarize_log(log_lines),
        "server_exit_status": exit_status,
    }
    print(json.dumps(report))
    healthy = (not dropped(results) and not results["wrong"] and not tracebacks
               and growth_mib <= options.max_growth_mib and exit_status == 0
               and php_at_start == options.connections)
    return 0 if healthy else 1


def dropped(results):
    return sum(sum(results[kind].values()) for kind in DROP_KINDS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--duration", type=float, default=600, help="seconds after the ramp-up")
    parser.add_argument("--ramp", type=float, default=20,
                        help="seconds over which the connections are opened")
    parser.add_argument("--max-growth-mib", type=float, default=5.0)
    options = parser.parse_args()
    sys.exit(asyncio.run(run(options)))


if __name__ == "__main__":
    main()
