"""Test helpers: a real greenbridge server process on loopback, real PHP, real clients."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import psutil
import pytest
from websockets.sync.client import connect

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIO_PHP = os.path.join(REPO, "tests", "php", "scenario.php")
ECHO_PHP = os.path.join(REPO, "conf", "echo.php")
PHP = "php"

_LISTENING = re.compile(
    r"listening on (wss?)://([\d.]+):(\d+) \(PHP connects back to ([\d.]+):(\d+)\)")


def read_until_closed(sock):
    """What the server sent before it closed (a reset counts as closed)."""
    received = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk
    except ConnectionResetError:
        return received


def stop_process(process, timeout=10):
    """SIGTERM a helper process we started (by PID), SIGKILL it if it does not end."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


class Bridge:
    """A greenbridge server started as its own process; its log is collected as it runs."""

    def __init__(self, args, env=None, cwd=REPO, command=(sys.executable, "-m", "greenbridge")):
        environment = dict(os.environ)
        environment.update(env or {})
        self.process = subprocess.Popen(
            [*command, *args], cwd=cwd, env=environment,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        self.port = self.tcp_port = None
        self.scheme = "ws"

    def _read_log(self):
        for raw in self.process.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def wait_listening(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                match = _LISTENING.search(line)
                if match:
                    self.scheme = match.group(1)
                    self.port, self.tcp_port = int(match.group(3)), int(match.group(5))
                    return self
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError("bridge did not start:\n" + self.log)

    @property
    def log(self):
        return "\n".join(self.lines)

    def url(self, path="/"):
        return "%s://127.0.0.1:%d%s" % (self.scheme, self.port, path)

    def wait_for_log(self, pattern, timeout=10):
        """Wait for a log line matching the regex; return the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = regex.search(line)
                if match:
                    return match
            time.sleep(0.02)
        raise AssertionError("no log line matching %r in:\n%s" % (pattern, self.log))

    def assert_serves(self):
        """A fresh connection still gets its message echoed (scenario.php or echo.php)."""
        with connect(self.url()) as ws:
            ws.send(b"still serving")
            assert ws.recv(timeout=20) == b"still serving"

    def php_processes(self):
        """PHP processes (and their children) started by this server or its workers."""
        try:
            server = psutil.Process(self.process.pid)
            command = server.cmdline()
            descendants = server.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [process for process in descendants if not _is_worker(process, command)]

    def workers(self):
        """The forked worker processes (same command line as the server)."""
        try:
            server = psutil.Process(self.process.pid)
            return [child for child in server.children() if _is_worker(child, server.cmdline())]
        except psutil.NoSuchProcess:
            return []

    def wait_no_php(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.php_processes():
                return
            time.sleep(0.05)
        raise AssertionError("PHP processes still running: %r" % self.php_processes())

    def signal(self, signum):
        self.process.send_signal(signum)

    def stop(self, timeout=30):
        """SIGTERM, wait, return the exit status (SIGKILL if it hangs, by PID)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("bridge did not stop within %ss" % timeout)
        finally:
            self._reader.join(5)

    def kill(self):
        for child in self.php_processes() + self.workers():
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _is_worker(process, server_command):
    try:
        return process.cmdline() == server_command
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


@pytest.fixture
def start_bridge():
    """start_bridge(*flags, script=..., env=...) -> a listening Bridge; stopped after the test."""
    started = []

    def start(*flags, script=SCENARIO_PHP, env=None, php=PHP, cwd=REPO):
        script_flags = ("-s", script) if script else ()  # None: routes only
        args = ["-H", "127.0.0.1", "-P", "0", "-e", php, *script_flags, *flags]
        bridge = Bridge(args, env=env, cwd=cwd)
        started.append(bridge)
        return bridge.wait_listening()

    yield start
    for bridge in started:
        if bridge.process.poll() is None:
            bridge.kill()


# -- t14-e2e helpers

def wait_until(condition, timeout=10, what="the condition"):
    """Call `condition` until it returns something true and return that; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError("%s did not hold within %gs" % (what, timeout))
        time.sleep(0.02)


def stopped_log(server):
    """Stop the server (it must exit 0) and return its whole log.

    A check that something did NOT happen (no traceback, no access line, no
    forged line) reads this: once the server is gone, nothing can be written later.
    """
    assert server.stop() == 0, server.log
    return server.log


def access_lines(log):
    """The access lines of a log: one per connection that ran (and so started PHP)."""
    return [line for line in log.splitlines() if "greenbridge.access" in line]


# -- t14-units helpers

def worker_holding(bridge, sock):
    """The PID of the worker whose end of the connection `sock` is (as the kernel tells)."""
    client_address = sock.getsockname()
    for worker in bridge.workers():
        for connection in worker.net_connections("tcp"):
            if connection.raddr and tuple(connection.raddr) == client_address:
                return worker.pid
    raise AssertionError("no worker holds the connection from %s:%d" % client_address)


# -- t14-fuzz helpers

def stop_cleanly(bridge):
    """Stop the bridge; it must exit with status 0 and its whole log (read after it exited,
    so nothing logged late is missed) must hold no traceback and no crashed greenlet."""
    log = stopped_log(bridge)
    assert "Traceback" not in log, log
    assert not re.search(r"<Greenlet .* failed with ", log), log  # gevent's line for a crash
    return log


@contextmanager
def running_bridge(*flags, script=SCENARIO_PHP, assert_serves=Bridge.assert_serves):
    """A listening Bridge for the block; after it, the bridge must still serve a normal
    client (`assert_serves(bridge)`) and stop cleanly (see stop_cleanly). Killed (by PID)
    whatever happens."""
    bridge = Bridge(["-H", "127.0.0.1", "-P", "0", "-e", PHP, "-s", script, *flags])
    try:
        yield bridge.wait_listening()
        assert_serves(bridge)
        stop_cleanly(bridge)
    finally:
        bridge.kill()
