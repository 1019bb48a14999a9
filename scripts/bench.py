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
(scripts/bench-results/ by default).
"""

import argparse
import asyncio
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
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANDLER = os.path.join(REPO, "scripts", "bench", "handler.php")
SERVERS = ("greenbridge", "websocketd")
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

    def __init__(self, name, php, workers, log_dir, message_mode="raw"):
        self.name = name
        self.port = free_port()
        if name == "greenbridge":
            command = [sys.executable, "-m", "greenbridge", "-H", "127.0.0.1", "-P", str(self.port),
                       "-e", php, "-s", HANDLER, "--workers", workers,
                       "--message-mode", message_mode,
                       "--max-connections", "5000", "--max-processes", "5000",
                       "--shutdown-timeout", "2"]
        else:
            command = ["websocketd", "--port=%d" % self.port, "--address=127.0.0.1",
                       "--binary=true", php, HANDLER]
        self.log = open(os.path.join(log_dir, "%s.log" % name), "ab")
        self.process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_connectable()

    def url(self, query=""):
        return "ws://127.0.0.1:%d/%s" % (self.port, "?" + query if query else "")

    def _wait_connectable(self):
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("%s exited at start-up" % self.name)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
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
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


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


CLIENT_SCENARIOS = {
    "pingpong": client_pingpong, "concurrent": client_concurrent, "churn": client_churn,
    "large": client_large, "idle": client_idle, "stream": client_stream,
}


def run_clients(scenario, url, arguments, processes, during=None):
    """Run `processes` client processes; `during(server)` runs once they all started."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    readies = [context.Event() for _ in range(processes)]
    go = context.Event()
    workers = [context.Process(target=_client_main,
                               args=(scenario, url, arguments, ready, go, results))
               for ready in readies]
    for worker in workers:
        worker.start()
    for ready in readies:
        if not ready.wait(_CLIENT_TIMEOUT) and results.empty():
            raise RuntimeError("%s: clients not ready" % scenario)
    go.set()
    measured = during() if during else None
    outcomes = [results.get(timeout=_CLIENT_TIMEOUT) for _ in workers]
    for worker in workers:
        worker.join(30)
    return outcomes, measured


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


SCENARIOS = {
    "pingpong": scenario_pingpong, "concurrent": scenario_concurrent,
    "churn": scenario_churn, "large": scenario_large, "idle": scenario_idle,
    "stream": scenario_stream,
    "framed-pingpong": scenario_pingpong, "framed-concurrent": scenario_concurrent,
}
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
HEADLINES["framed-pingpong"] = HEADLINES["pingpong"]
HEADLINES["framed-concurrent"] = HEADLINES["concurrent"]


def run_once(scenario, name, options, log_dir):
    load_before = os.getloadavg()[0]
    # The framed- scenarios run greenbridge in framed mode with the PHP
    # library; websocketd (which has no such mode) runs the same as before.
    mode = "framed" if scenario.startswith("framed-") else "raw"
    server = Server(name, options.php, options.workers, log_dir, mode)
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
    rows = [("scenario", "metric", "greenbridge", "websocketd", "gb / wsd")]
    for scenario, by_server in results["scenarios"].items():
        for metric, label, _higher in HEADLINES[scenario]:
            ours = median_of(by_server["greenbridge"], metric)
            theirs = median_of(by_server["websocketd"], metric)
            ratio = "%.2f" % (ours / theirs) if ours is not None and theirs else "-"
            rows.append((scenario, label, _format(ours), _format(theirs), ratio))
        for name in SERVERS:
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
        values = [[run[metric] for run in by_server[name]
                   if isinstance(run.get(metric), (int, float))] for name in SERVERS]
        medians = [statistics.median(found) if found else 0 for found in values]
        axis.bar(SERVERS, medians, color=["#2e7d32", "#1565c0"])
        for position, found in enumerate(values):
            axis.scatter([position] * len(found), found, color="black", s=8, zorder=3)
        axis.set_title("%s: %s" % (scenario, label), fontsize=9)
        axis.tick_params(labelsize=8)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    figure.suptitle("greenbridge (--workers %s) vs websocketd, same PHP, %s; bars: medians, dots: runs"
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
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help="comma list of scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--workers", default="auto", help="greenbridge --workers")
    parser.add_argument("--php", default="php")
    parser.add_argument("--output", default=os.path.join(REPO, "scripts", "bench-results"))
    parser.add_argument("--update", action="store_true",
                        help="replace only the scenarios run in the existing results.json")
    options = parser.parse_args()
    if shutil.which("websocketd") is None:
        parser.error("websocketd is not installed (scripts/setup.sh --bench)")
    try:
        import picows  # noqa: F401 (the client processes import it; without it they die silently)
    except ImportError:
        parser.error("picows is not installed (scripts/setup.sh --bench)")
    os.makedirs(options.output, exist_ok=True)
    log_dir = tempfile.mkdtemp(prefix="greenbridge-bench-")

    results_path = os.path.join(options.output, "results.json")
    results = {"machine": machine_description(), "workers": options.workers,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "scenarios": {}}
    if options.update and os.path.exists(results_path):
        with open(results_path) as existing:
            results["scenarios"] = json.load(existing)["scenarios"]
    for scenario in options.only.split(","):
        repetitions = options.idle_repetitions if scenario == "idle" else options.repetitions
        runs = results["scenarios"][scenario] = {name: [] for name in SERVERS}
        for repetition in range(repetitions):
            order = SERVERS if repetition % 2 == 0 else SERVERS[::-1]
            for name in order:
                run = run_once(scenario, name, options, log_dir)
                runs[name].append(run)
                print("%-10s %-11s #%d %s" % (scenario, name, repetition + 1,
                                              json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                                          for k, v in run.items()})), flush=True)
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
