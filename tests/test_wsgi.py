"""greenbridge.wsgi under a real gunicorn: two workers, limits, composition, shutdown."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack

import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from certs import make_ca
from support import (REPO, SCENARIO_PHP, LoggedProcess, access_lines, assert_head_matches_get,
                     client_context, free_port, half_sent_handshake as half_sent,
                     held_php_environment, php_environment, readme_snippet, stopped_log,
                     wait_closed, wait_until)
from tls_client import connect_wss

STOCK_WORKER = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
BRIDGE_WORKER = "greenbridge.gunicorn_worker.BridgeWorker"


class Gunicorn(LoggedProcess):
    def __init__(self, command, workers, env, cwd=REPO):
        """gunicorn started by `command`, once it listens and its `workers` have booted."""
        super().__init__(command, env=env, cwd=cwd)
        self.port = int(self.wait_for_log(r"Listening at: https?://127\.0\.0\.1:(\d+)",
                                          timeout=30).group(1))
        wait_until(lambda: sum("Booting worker" in line for line in self.lines) >= workers, 30,
                   lambda: "workers booted:\n" + self.log)

    def url(self, path="/"):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def php_processes(self):
        try:
            tree = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [process for process in tree if process.name().startswith("php")]

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.wait(60)

    def kill(self):
        if self.process.poll() is None:
            for process in psutil.Process(self.process.pid).children(recursive=True):
                process.kill()
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def gunicorn(tmp_path):
    started = []

    def start(worker_class=STOCK_WORKER, workers=2, app="greenbridge.wsgi:application",
              extra_config="", extra_args=()):
        config = tmp_path / "bridge.conf"
        config.write_text("php-executable = php\nscript = %s\nphp-kill-grace = 0.5\n%s"
                          % (SCENARIO_PHP, extra_config))
        command = [sys.executable, "-m", "gunicorn", "-k", worker_class, "-w", str(workers),
                   "-b", "127.0.0.1:0", "--graceful-timeout", "5", "--pythonpath",
                   os.path.join(REPO, "tests"), *extra_args, app]
        server = Gunicorn(command, workers, {"GREENBRIDGE_CONFIG": str(config),
                                             "GREENBRIDGE_TEST_CONFIG": str(config)})
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def test_two_gunicorn_workers_bridge_like_the_standalone_server(gunicorn):
    server = gunicorn(workers=2)
    workers = {process.pid for process in psutil.Process(server.process.pid).children()}
    with ExitStack() as stack:
        back_ports, php_parents = set(), set()
        for number in range(40):
            env = held_php_environment(stack, server.url("/room?n=%d" % number))[1]
            assert env["WSS_REQUEST_URI"] == "/room?n=%d&do=env" % number
            assert env["WSS_CLIENT_IP"] == "127.0.0.1"
            assert env["WSS_SERVER_PORT"] == str(server.port)
            back_ports.add(env["WSS_TCP_PORT"])
            if len(back_ports) == 2 and number >= 3:
                break
        assert len(back_ports) == 2, "one gunicorn worker served every connection"
        php_parents = {process.ppid() for process in server.php_processes()}
        assert php_parents <= workers and len(php_parents) == 2
        with connect(server.url()) as ws:
            ws.send(b"echo through gunicorn")
            assert ws.recv(timeout=20) == b"echo through gunicorn"
        held_php = server.php_processes()
        assert held_php

    log = stopped_log(server)
    gone, alive = psutil.wait_procs(held_php, timeout=15)
    assert not alive, "PHP processes outlived gunicorn: %r" % alive
    assert "Traceback" not in log


def test_gunicorn_terminating_tls_tells_php_wss_tls(gunicorn, tmp_path):
    ca = make_ca("gunicorn test CA")
    cert_path, key_path = ca.issue("localhost", ["localhost"]).write(tmp_path, "gunicorn")
    server = gunicorn(workers=1, extra_args=("--certfile", cert_path, "--keyfile", key_path))
    env = php_environment("wss://127.0.0.1:%d/" % server.port, ssl=client_context(ca.cert_pem),
                          server_hostname="localhost")
    assert env["WSS_TLS"] == "1"
    assert "WSS_CLIENT_CERT_SUBJECT" not in env


def test_limit_under_the_stock_worker_closes_with_1013(gunicorn):
    server = gunicorn(workers=1, extra_config="max-connections = 1\n")
    with connect(server.url()) as first:
        first.send(b"x")
        assert first.recv(timeout=20) == b"x"
        with connect(server.url()) as second:
            with pytest.raises(ConnectionClosed) as closed:
                second.recv(timeout=20)
        assert closed.value.rcvd.code == 1013
        assert "connection limit (1) reached" in closed.value.rcvd.reason
    log = stopped_log(server)
    assert len(access_lines(log)) == 1  # the refused one never ran
    assert "Traceback" not in log


def test_bridge_worker_refuses_with_http_503_before_any_php(gunicorn):
    server = gunicorn(worker_class=BRIDGE_WORKER, workers=1, extra_config="max-connections = 1\n")
    with connect(server.url()) as first:
        first.send(b"y")
        assert first.recv(timeout=20) == b"y"
        with pytest.raises(InvalidStatus) as refused:
            connect(server.url(), open_timeout=20)
        assert refused.value.response.status_code == 503
        assert len(server.php_processes()) == 1
    with pytest.raises(urllib.error.HTTPError) as plain_get:
        urllib.request.urlopen("http://127.0.0.1:%d/" % server.port, timeout=20)
    assert plain_get.value.code == 426
    assert len(access_lines(stopped_log(server))) == 1  # the refused one never ran


def test_bridge_worker_boots_without_a_monkey_patch_warning(gunicorn):
    """The master imports the worker class before the worker monkey-patches: had that
    import loaded ssl users (requests, urllib3), gevent would warn at every worker boot."""
    server = gunicorn(worker_class=BRIDGE_WORKER, workers=1)
    with connect(server.url()) as ws:  # booted and patched: it serves
        ws.send(b"patched")
        assert ws.recv(timeout=20) == b"patched"
    log = stopped_log(server)
    assert "MonkeyPatchWarning" not in log, log


def test_greenbridge_beside_a_plain_wsgi_app_with_middleware(gunicorn):
    # One worker: an idle second one would hold the stop below for the graceful timeout.
    server = gunicorn(worker_class=BRIDGE_WORKER, workers=1, app="wsgi_composed:application")
    with urllib.request.urlopen("http://127.0.0.1:%d/about" % server.port, timeout=20) as reply:
        assert reply.read() == b"plain site: /about"
    env = php_environment(server.url("/ws/chat"))
    assert env["WSS_REQUEST_PATH"] == "/ws/chat"
    assert json.loads(env["WSS_REQUEST_HEADERS"])["x-seen-by-middleware"] == "yes"
    # An upgrade outside the prefix is the plain app's, which does not upgrade.
    with pytest.raises(InvalidStatus) as refused:
        connect(server.url("/elsewhere"), open_timeout=20)
    assert refused.value.response.status_code == 200
    assert len(access_lines(stopped_log(server))) == 1  # only /ws/chat ran a connection


@pytest.mark.parametrize("worker_class", [STOCK_WORKER, BRIDGE_WORKER], ids=["stock", "bridge"])
def test_head_under_gunicorn_has_no_body(gunicorn, worker_class):
    server = gunicorn(worker_class, workers=1)
    assert_head_matches_get(server.port, "/", 426)


def test_create_app_takes_options_by_name_and_refuses_bad_ones(tmp_path):
    from greenbridge.config import ConfigError
    from greenbridge.wsgi import create_app

    bridge = create_app(php_executable="php", script=SCENARIO_PHP, trusted_proxy=["10.0.0.0/8"],
                        php_arg=["a", "b"], max_connections=7)
    assert bridge.config.max_connections == 7
    assert bridge.config.php_args == ("a", "b")
    assert bridge.config.is_trusted_proxy("10.1.2.3")
    with pytest.raises(ConfigError, match="--script: .*is not a file"):
        create_app(php_executable="php", script=str(tmp_path / "missing.php"))
    with pytest.raises(ConfigError, match="--ws-port"):
        create_app(php_executable="php", script=SCENARIO_PHP, ws_port="http")


def test_gunicorn_graceful_stop_closes_with_1001_and_ends_php(gunicorn):
    server = gunicorn(workers=1, extra_config="shutdown-timeout = 1\n")
    with connect(server.url("/?do=ignore_term")) as ws:
        php = psutil.Process(int(ws.recv(timeout=20)))  # ignores SIGTERM and EOF
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd.code == 1001
    assert server.wait(30) == 0
    gone, alive = psutil.wait_procs([php], timeout=15)
    assert not alive
    assert "closing 1 connection(s) with 1001" in server.log


@pytest.mark.parametrize("limits, closed, log_line", [
    # Every half-sent request is cut at the deadline (it was held for good).
    ("handshake-timeout = 2\n", slice(None),
     r"client 127\.0\.0\.1:\d+: no complete upgrade request within 2s"),
    # The oldest make way for newer clients, long before the 60 s budget.
    ("handshake-timeout = 60\nmax-pending-handshakes = 10\n", slice(0, 20),
     r"10 handshakes pending: dropping the oldest"),
], ids=["deadline", "pending-cap"])
def test_bridge_worker_applies_the_handshake_limits(gunicorn, limits, closed, log_line):
    server = gunicorn(worker_class=BRIDGE_WORKER, workers=1, extra_config=limits)
    started = time.monotonic()
    crowd = [half_sent(server.port) for _ in range(30)]
    try:
        with connect(server.url(), open_timeout=20) as ws:  # a real client meanwhile
            ws.send(b"past the crowd")
            assert ws.recv(timeout=20) == b"past the crowd"
        wait_closed(crowd[closed], timeout=10)
        print("%d half-sent requests closed %.1fs after the first connected"
              % (len(crowd[closed]), time.monotonic() - started))
    finally:
        for sock in crowd:
            sock.close()
    server.wait_for_log(log_line, timeout=30)
    assert "Traceback" not in stopped_log(server)


def test_stock_worker_refuses_oversized_headers_before_php(gunicorn):
    server = gunicorn(workers=1)
    oversized = {"X-Big-%d" % number: "b" * 60000 for number in range(3)}
    with connect(server.url(), additional_headers=oversized, open_timeout=20) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=20)
    assert closed.value.rcvd.code == 1009
    assert "request line and headers over 16384 bytes" in closed.value.rcvd.reason
    server.wait_for_log(r"431 Request Header Fields Too Large", timeout=30)
    with connect(server.url()) as ws:
        ws.send(b"still serving")
        assert ws.recv(timeout=20) == b"still serving"
    log = stopped_log(server)
    assert len(access_lines(log)) == 1  # the refused one never ran
    assert "Traceback" not in log


def test_bridge_worker_cuts_a_stalled_tls_handshake(gunicorn, tmp_path):
    ca = make_ca("gunicorn test CA")
    cert_path, key_path = ca.issue("localhost", ["localhost"]).write(tmp_path, "gunicorn")
    server = gunicorn(worker_class=BRIDGE_WORKER, workers=1,
                      extra_config="handshake-timeout = 2\n",
                      extra_args=("--certfile", cert_path, "--keyfile", key_path))
    stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=30)
               for _ in range(5)]
    try:
        with connect_wss("wss://127.0.0.1:%d/" % server.port, ssl=client_context(ca.cert_pem),
                         server_hostname="localhost") as ws:
            ws.send(b"over TLS")
            assert ws.recv(timeout=20) == b"over TLS"
        wait_closed(stalled, timeout=2 + 8)
    finally:
        for sock in stalled:
            sock.close()
    server.wait_for_log(r"client 127\.0\.0\.1:\d+: no complete upgrade request within 2s "
                        r"\(in the TLS handshake\)", timeout=30)
    assert "Traceback" not in stopped_log(server)


# -- README.rst's gunicorn recipe, as printed ------------------------------------------

# What a clone has that matters to pip, without this checkout's own environment and builds.
_NOT_IN_A_CLONE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                         "__pycache__", ".pytest_cache", "acme-state")


def readme_command(name, port):
    """README.rst's command `name` for bash, its port 8080 replaced by `port`."""
    command = readme_snippet(name)
    assert "127.0.0.1:8080" in command, command
    return command.replace("127.0.0.1:8080", "127.0.0.1:%d" % port)


def activated(venv):
    """The environment `. venv/bin/activate` gives, for the commands run by bash."""
    return {"VIRTUAL_ENV": str(venv),
            "PATH": "%s:%s" % (os.path.join(venv, "bin"), os.environ["PATH"])}


@pytest.mark.timeout(900)
def test_the_gunicorn_extra_installs_in_a_new_venv_and_the_readme_commands_echo(tmp_path):
    """README's install command in a new virtual environment, then each of its gunicorn
    commands with two workers. The longest test here (about 25 s on an idle machine, over a
    minute on a busy one): creating the environment and pip installing greenbridge and its
    dependencies into it (about 5 s and 15 s idle) is what is tested."""
    checkout = tmp_path / "greenbridge"
    shutil.copytree(REPO, checkout, ignore=_NOT_IN_A_CLONE)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    environment = activated(venv)
    install = subprocess.run(["bash", "-c", readme_snippet("gunicorn-install")], cwd=checkout,
                             env={**os.environ, **environment}, capture_output=True, text=True,
                             timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    for name in ("gunicorn-run", "gunicorn-run-bridge-worker"):
        port = free_port()
        server = Gunicorn(["bash", "-c", readme_command(name, port)], 2, environment,
                          cwd=checkout)
        try:
            assert server.port == port
            # gunicorn itself, from the new environment (bash replaced itself with it).
            python, script = psutil.Process(server.process.pid).cmdline()[:2]
            assert python.startswith(str(venv)) and script == str(venv / "bin" / "gunicorn")
            with connect(server.url(), open_timeout=20) as ws:
                ws.send(b"echo under gunicorn")
                assert ws.recv(timeout=20) == b"echo under gunicorn"
            log = stopped_log(server)
        finally:
            server.kill()
        assert "Traceback" not in log, log


NO_CONFIGURATION = ("greenbridge.wsgi: GREENBRIDGE_CONFIG is not set: name the bridge's config "
                    "file, e.g. GREENBRIDGE_CONFIG=conf/bridge.conf (or set WSS_CONFIG_* "
                    "variables)")
# gunicorn's own traceback when two workers fail to load at once: its master halts on the
# first one's exit and raises again, inside the halt, on the second's (gunicorn 27.0.1).
GUNICORN_HALTS_TWICE = "gunicorn.errors.HaltServer: <HaltServer 'App failed to load.' 4>"


@pytest.mark.parametrize("workers,config,line", [
    ("1", None, NO_CONFIGURATION),
    ("1", "php-executable = php\nscript = /nonexistent/handler.php\n",
     "greenbridge.wsgi: --script: '/nonexistent/handler.php' is not a file"),
    ("2", None, NO_CONFIGURATION),  # the README's command as printed
], ids=["no configuration", "a bad setting", "no configuration, two workers"])
def test_gunicorn_without_a_usable_configuration_stops_with_one_line(tmp_path, monkeypatch,
                                                                     workers, config, line):
    for name in list(os.environ):
        if name == "GREENBRIDGE_CONFIG" or name.startswith("WSS_CONFIG_"):
            monkeypatch.delenv(name)
    command = readme_command("gunicorn-run", free_port()).replace("-w 2", "-w " + workers)
    if config is None:  # the README's command without its GREENBRIDGE_CONFIG
        command = command.replace("GREENBRIDGE_CONFIG=conf/bridge.conf ", "")
    else:
        (tmp_path / "bad.conf").write_text(config)
        command = command.replace("conf/bridge.conf", str(tmp_path / "bad.conf"))
    gunicorn = LoggedProcess(["bash", "-c", command],
                             env=activated(os.path.dirname(os.path.dirname(sys.executable))))
    try:
        status = gunicorn.wait(60)  # stopped, not booting workers again and again
    finally:
        if gunicorn.process.poll() is None:
            gunicorn.process.kill()
    assert status != 0
    # Each worker that booted before the first one failed may say it, in the same words.
    said = {text for text in gunicorn.lines if text.startswith("greenbridge")}
    assert said == {line}, gunicorn.log
    if workers == "1" or "Traceback" not in gunicorn.log:
        assert "Traceback" not in gunicorn.log, gunicorn.log
    else:
        assert gunicorn.lines[-1] == GUNICORN_HALTS_TWICE, gunicorn.log
        assert not re.search(r'File ".*/greenbridge/', gunicorn.log), gunicorn.log


def test_the_configuration_line_reaches_stderr_in_one_write():
    """Two gunicorn workers failing at once each print the line; written in two
    pieces (text, then newline) the lines splice. A SOCK_SEQPACKET stderr keeps
    each write(2) as one record, so the records show how the line was written."""
    child_stderr, records = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # What gunicorn's arbiter does with an AppImportError (gunicorn 27.0.1, spawn_worker).
    script = ("import sys, greenbridge.wsgi\n"
              "try:\n"
              "    greenbridge.wsgi.application\n"
              "except Exception as e:\n"
              "    print('%s' % e, file=sys.stderr)\n")
    env = {name: value for name, value in os.environ.items()
           if name != "GREENBRIDGE_CONFIG" and not name.startswith("WSS_CONFIG_")}
    with child_stderr, records:
        subprocess.run([sys.executable, "-c", script], stderr=child_stderr, env=env,
                       check=True, timeout=60)
        child_stderr.close()
        records.settimeout(10)
        written = []
        while record := records.recv(65536):
            written.append(record.decode())
    assert written == [NO_CONFIGURATION + "\n"]
