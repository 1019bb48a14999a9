#!/usr/bin/env python3
"""Soak test: many connections each exchanging a message every second, for a long time.

    .venv/bin/python scripts/soak.py                    # 500 connections, 10 minutes
    .venv/bin/python scripts/soak.py --duration 30      # what CI runs

Starts its own greenbridge (conf/echo.php, loopback, free ports), opens the
connections, and every second each one sends a message and waits for its
echo. Prints one JSON object with the results and exits 1 if any connection
dropped, any echo was wrong, or the server's memory grew by more than
--max-growth-mib between the end of the ramp-up and the end of the run.
Needs the test tools (scripts/setup.sh --test).
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LISTENING = re.compile(r"listening on ws://[\d.]+:(\d+) ")


def start_server(connections):
    """greenbridge on free loopback ports; returns (process, WebSocket port, its log lines)."""
    limit = str(connections + 16)
    server = subprocess.Popen(
        [sys.executable, "-m", "greenbridge", "-H", "127.0.0.1", "-P", "0", "-e", "php",
         "-s", os.path.join(REPO, "conf", "echo.php"), "-M", limit, "-m", limit],
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
    """One connection: a message a second until the stop time, every echo checked."""
    await asyncio.sleep(start_delay)
    try:
        async with connect("ws://127.0.0.1:%d/" % port, open_timeout=60,
                           ping_interval=None) as ws:
            results["open"] += 1
            sequence = 0
            while not stop_at or time.monotonic() < stop_at[0]:
                message = b"%d:%d" % (number, sequence)
                started = time.monotonic()
                await ws.send(message)
                echoed = await asyncio.wait_for(ws.recv(), 30)
                if sequence:  # the first answer also waited for PHP to start
                    results["latencies"].append(time.monotonic() - started)
                results["messages"] += 1
                results["wrong"] += echoed != message
                sequence += 1
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    except Exception as error:  # counted: the soak reports, it does not stop
        results["dropped"] += 1
        print("soak: connection %d dropped: %r" % (number, error), file=sys.stderr)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


async def run(options):
    server, port, log_lines = start_server(options.connections)
    results = {"open": 0, "messages": 0, "dropped": 0, "wrong": 0, "latencies": []}
    stop_at = []  # the stop time, set once every connection is open
    try:
        process = psutil.Process(server.pid)
        clients = asyncio.gather(*(
            exchange(port, number, options.ramp * number / options.connections, stop_at,
                     results) for number in range(options.connections)))
        ramp_deadline = time.monotonic() + options.ramp + 60
        while results["open"] + results["dropped"] < options.connections and \
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
        "php_processes_at_start": php_at_start,
        "messages": results["messages"],
        "dropped": results["dropped"],
        "wrong_echoes": results["wrong"],
        "latency_p50_ms": round(1000 * percentile(results["latencies"], 0.5), 2),
        "latency_p99_ms": round(1000 * percentile(results["latencies"], 0.99), 2),
        "rss_start_mib": round(rss_start / 2 ** 20, 1),
        "rss_end_mib": round(rss_end / 2 ** 20, 1),
        "rss_max_mib": round(max(rss_samples) / 2 ** 20, 1),
        "rss_growth_mib": round(growth_mib, 2),
        "tracebacks_in_log": tracebacks,
        "server_exit_status": exit_status,
    }
    print(json.dumps(report))
    healthy = (not results["dropped"] and not results["wrong"] and not tracebacks
               and growth_mib <= options.max_growth_mib and exit_status == 0
               and php_at_start == options.connections)
    return 0 if healthy else 1


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
