"""What the tests share: a real greenbridge server process on loopback, real PHP, real
clients (hand-written HTTP and WebSocket bytes, TLS), and the CLI run as a process.

Pytest fixtures live in conftest.py; everything else the test modules share lives here,
once, and test modules import from here, never from each other."""

import base64
import functools
import json
import os
import re
import select
import shlex
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, hmac
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from greenbridge.cli import load_config
from greenbridge.settings.values import ConfigError
from tls_client import connect_wss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIO_PHP = os.path.join(REPO, "tests", "php", "scenario.php")
# The plain-socket echo (conf/raw.conf serves it): what raw mode, the default, runs.
ECHO_PHP = os.path.join(REPO, "conf", "raw-echo.php")
LIBRARY_PHP = os.path.join(REPO, "tests", "php", "library.php")
# The echo through the PHP library that conf/bridge.conf serves (in framed mode).
LIBRARY_ECHO_PHP = os.path.join(REPO, "conf", "echo.php")
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


def free_port():
    """A loopback port nothing listens on now (for helper servers that need a port given)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port, process, name, timeout=30):
    """Wait until `process` (a helper server called `name`) accepts connections on `port`."""
    def listening():
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError("%s exited with %s: %s" % (name, process.returncode, output))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_until(listening, timeout, "%s listening on port %d" % (name, port))


def stop_process(process, timeout=10):
    """SIGTERM a helper process we started (by PID), SIGKILL it if it does not end."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def start_nginx(directory, site, port):
    """nginx as our own process, serving `site` (the text of a site file listening on
    `port`), with everything it writes in `directory`; the process, once it listens."""
    (directory / "site.conf").write_text(site)
    (directory / "nginx.conf").write_text(
        "pid %(d)s/nginx.pid;\nerror_log %(d)s/error.log info;\nworker_processes 1;\n"
        "events { worker_connections 64; }\n"
        "http {\n access_log %(d)s/access.log;\n client_body_temp_path %(d)s/body;\n"
        " proxy_temp_path %(d)s/proxy;\n fastcgi_temp_path %(d)s/fastcgi;\n"
        " uwsgi_temp_path %(d)s/uwsgi;\n scgi_temp_path %(d)s/scgi;\n"
        " include %(d)s/site.conf;\n}\n" % {"d": directory})
    process = subprocess.Popen(
        ["nginx", "-c", str(directory / "nginx.conf"), "-p", str(directory), "-e",
         str(directory / "error.log"), "-g", "daemon off;"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, "nginx", timeout=15)
    except BaseException:
        stop_process(process)
        raise
    return process


class LoggedProcess:
    """A process we started; its output (stdout and stderr) is collected line by line as it runs."""

    def __init__(self, command, env=None, cwd=REPO):
        environment = dict(os.environ)
        environment.update(env or {})
        self.process = subprocess.Popen(
            command, cwd=cwd, env=environment,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self):
        for raw in self.process.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def log(self):
        return "\n".join(self.lines)

    def wait(self, timeout):
        """The exit status, once the process has exited and its whole log is read."""
        status = self.process.wait(timeout)
        self._reader.join(5)
        return status

    def wait_for_log(self, pattern, timeout=10):
        """Wait for a log line matching the regex; return the match. Fails at once if the
        process exits without writing it."""
        regex = re.compile(pattern)

        def written():
            exited = self.process.poll() is not None
            if exited:
                self._reader.join(5)  # its last lines
            match = next(filter(None, map(regex.search, list(self.lines))), None)
            if match or not exited:
                return match
            raise AssertionError("exited (status %s) without a line matching %r:\n%s"
                                 % (self.process.returncode, pattern, self.log))
        return wait_until(written, timeout,
                          lambda: "a log line matching %r in:\n%s" % (pattern, self.log))


class Bridge(LoggedProcess):
    """A greenbridge server started as its own process; its log is collected as it runs."""

    def __init__(self, args, env=None, cwd=REPO, command=(sys.executable, "-m", "greenbridge")):
        super().__init__([*command, *args], env=env, cwd=cwd)
        self.port = self.tcp_port = None
        self.scheme = "ws"

    def wait_listening(self, timeout=15):
        match = self.wait_for_log(_LISTENING.pattern, timeout)
        self.scheme = match.group(1)
        self.port, self.tcp_port = int(match.group(3)), int(match.group(5))
        return self

    def url(self, path="/"):
        return "%s://127.0.0.1:%d%s" % (self.scheme, self.port, path)

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
        wait_until(lambda: not self.php_processes(), timeout, "no PHP process left")

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


def wait_until(condition, timeout=10, what="the condition", pause=time.sleep):
    """Call `condition` until it returns something true and return that; fail after `timeout` s
    (`what` names the condition in the failure; a callable is called then, to show late state).
    `pause` waits between calls: gevent.sleep where greenlets of this process must run."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError("%s did not hold within %gs"
                                 % (what() if callable(what) else what, timeout))
        pause(0.02)


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


def assert_no_other_connection_ran(bridge):
    """What came before started no PHP: a normal connection (assert_serves) runs now, and the
    stopped log holds its access line and no other. (A bare ``access_lines(log) == []`` would
    also hold for a server that wrote no access line at all.) Returns the log."""
    bridge.assert_serves()
    log = stopped_log(bridge)
    ran = access_lines(log)
    assert len(ran) == 1, "%d access lines, not just assert_serves' one, in:\n%s" % (len(ran), log)
    return log


def worker_holding(bridge, sock):
    """The PID of the worker whose end of the connection `sock` is (as the kernel tells)."""
    client_address = sock.getsockname()
    for worker in bridge.workers():
        for connection in worker.net_connections("tcp"):
            if connection.raddr and tuple(connection.raddr) == client_address:
                return worker.pid
    raise AssertionError("no worker holds the connection from %s:%d" % client_address)


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


# -- what PHP is told -----------------------------------------------------------------


def php_environment(url, full=False, **connect_options):
    """What scenario.php was given, read through a real connection to `url` (ws:// or
    wss://; for wss:// give `ssl`, a client context): its WSS_* variables, or with `full`
    its whole environment. `do=env` (or `do=fullenv`) is added to the URL's query.

    `connect_options` go to the client (subprotocols, origin, additional_headers, sock,
    server_hostname...). PHP must be told the subprotocol the client was given
    (WSS_SUBPROTOCOL absent when none was chosen); that is checked here, for every call."""
    with ExitStack() as stack:
        return held_php_environment(stack, url, full, **connect_options)[1]


def held_php_environment(stack, url, full=False, **connect_options):
    """php_environment on a connection that stays open until `stack` (an ExitStack) closes
    it: (the connection, the environment)."""
    url += ("&" if "?" in url else "?") + ("do=fullenv" if full else "do=env")
    open_connection = connect_wss if url.startswith("wss://") else connect
    connect_options.setdefault("open_timeout", 20)
    ws = stack.enter_context(open_connection(url, **connect_options))
    environment = json.loads(ws.recv(timeout=20))
    assert environment.get("WSS_SUBPROTOCOL") == ws.subprotocol, (
        "PHP was told subprotocol %r, the client got %r"
        % (environment.get("WSS_SUBPROTOCOL"), ws.subprotocol))
    return ws, environment


# -- forked workers -------------------------------------------------------------------

_WORKER_LINE = r"worker (\d) \(pid (\d+)\) listening on ws://[\d.]+:\d+ \(PHP connects back to [\d.]+:(\d+)\)"


def wait_workers(bridge, numbers, after=0, timeout=30):
    """{worker number: (pid, back-connection port)} from listening lines after line `after`."""
    def started():
        found = {}
        for line in bridge.lines[after:]:
            match = re.search(_WORKER_LINE, line)
            if match:
                found[int(match.group(1))] = (int(match.group(2)), int(match.group(3)))
        return found if set(numbers) <= set(found) else None
    return wait_until(started, timeout, lambda: "workers %s started:\n%s" % (numbers, bridge.log))


# -- the admin listener ---------------------------------------------------------------


def admin_port(bridge):
    return int(bridge.wait_for_log(r"admin endpoints on http://[\d.]+:(\d+)/").group(1))


def http_get(port, path):
    """(status, body text) of a GET on the admin listener."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(port):
    status, text = http_get(port, "/metrics")
    assert status == 200
    return scrape_text(text)


def scrape_text(text):
    """{(name, sorted labels): value} of a Prometheus text exposition."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    """One sample's value; a sample the scrape lacks (a renamed metric, say) fails the test."""
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, "no %s%r in the scrape, which has %s" % (
        name, labels, sorted({sample_name for sample_name, _ in samples}))
    return samples[key]


# -- HTTP by hand ---------------------------------------------------------------------


def closed_with(ws, timeout=10):
    """Read until the server closes; return (code, reason) it sent."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=timeout)
    assert closed.value.rcvd is not None, "server closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


def raw_http(port, request, timeout=5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        response = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return response.decode("latin-1")
            response += chunk


def upgrade_request(path="/", extra=b"", key=b"dGhlIHNhbXBsZSBub25jZQ=="):
    return (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")


def split_response_head(data):
    """((status line, {lower-case name: value}), what follows the blank line) of an HTTP answer."""
    head, blank, rest = data.partition(b"\r\n\r\n")
    assert blank, "no complete answer head in %r" % data[:200]
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}
    return (status, headers), rest


def head_then_get(port, path="/"):
    """HEAD, then GET, of `path` on one keep-alive connection; the answers parsed by hand.

    Returns (HEAD's status line and headers, GET's, GET's body). The GET answer
    must start right after the HEAD answer's blank line: a HEAD answer with a
    body would shift every later answer on the connection.
    """
    request = b" %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % path.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"HEAD" + request + b"\r\n" + b"GET" + request + b"Connection: close\r\n\r\n")
        received = read_until_closed(sock)
    head, rest = split_response_head(received)
    assert rest.startswith(b"HTTP/1.1 "), "the HEAD answer is followed by %r" % rest[:80]
    get, body = split_response_head(rest)
    return head, get, body


def assert_head_matches_get(port, path, status):
    head, get, body = head_then_get(port, path)
    assert head[0].startswith("HTTP/1.1 %d " % status) and get[0] == head[0]
    assert int(head[1]["content-length"]) == int(get[1]["content-length"]) == len(body) > 0


# -- WebSocket frames by hand ---------------------------------------------------------


def mask_payload(payload, key):
    """RFC 6455 5.3: byte i XOR key[i % 4]. Written here, not taken from greenbridge (whose
    unmask is what the server runs): the tests' frames must not depend on the code under test."""
    length = len(payload)
    key_stream = (key * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(key_stream, "big")
    return masked.to_bytes(length, "big")


def frame(opcode, payload, fin=True, mask=True, rsv=0, key=None):
    """A client frame; `key` is the masking key (random when not given)."""
    first = (0x80 if fin else 0) | rsv | opcode
    key = (os.urandom(4) if key is None else key) if mask else b""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, (0x80 if mask else 0) | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, length)
    else:
        header = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, length)
    body = mask_payload(payload, key) if mask else payload
    return header + key + body


def read_response_head(sock):
    """The server's answer up to its blank line (EOFError if it closes before)."""
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)
        if not byte:
            raise EOFError("connection closed after %r" % head)
        head += byte
    return head


class RawClient:
    def __init__(self, port, path="/"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(upgrade_request(path))
        assert read_response_head(self.sock).startswith(b"HTTP/1.1 101 ")

    def read_exact(self, count):
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def read_frame(self):
        first, second = self.read_exact(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self.read_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self.read_exact(8))[0]
        return first & 0x0F, self.read_exact(length)

    def read_close_code(self):
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0]

    def send_until_closed(self, data, piece=16384):
        """Send `data` in pieces until the server answers; return its close code.

        The server may close while data is still on its way: reading between
        pieces gets the close frame before the connection is torn down.
        """
        view = memoryview(data)
        try:
            for start in range(0, len(view), piece):
                self.sock.sendall(view[start:start + piece])
                if select.select([self.sock], [], [], 0)[0]:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        return self.read_close_code()

    def wait_read_by_server(self, timeout=20):
        """Wait until the server has read every byte sent so far (its receive queue is empty)."""
        wait_until(lambda: not server_unread_bytes(self.sock), timeout, "the server reading on")

    def close(self):
        self.sock.close()


def server_unread_bytes(sock):
    """Bytes sent on a loopback TCP connection that the peer has not read yet.

    /proc/net/tcp lists the peer's socket with its receive queue
    (``tx_queue:rx_queue``, hexadecimal), addresses as little-endian hex.
    """
    def address(host_port):
        host, port = host_port
        return "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(host))[0], port)
    local, remote = address(sock.getpeername()), address(sock.getsockname())
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return int(fields[4].split(":")[1], 16)
    raise AssertionError("no socket %s -> %s in /proc/net/tcp" % (local, remote))



def php_frame(frame_type, payload):
    """A frame of the framed message mode between the bridge and PHP (README): a type byte,
    a 4-byte big-endian length, the payload."""
    return struct.pack("!BI", frame_type, len(payload)) + payload


def is_utf8(data):
    """Whether the bytes are valid UTF-8 (as text frames and close reasons must be)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True

# -- sockets the server should close --------------------------------------------------


def half_sent_handshake(port, source="127.0.0.1"):
    """A client that sends the start of an upgrade request and then nothing."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(upgrade_request()[:40])
    return sock


def wait_closed(socks, timeout, left_open=0):
    """Read the sockets until the server has closed all of them but `left_open` at most;
    fail if it has not within `timeout` s."""
    still_open = {sock.fileno(): sock for sock in socks}

    def enough_closed():
        readable, _, _ = select.select(list(still_open.values()), [], [], 0.2)
        for sock in readable:
            try:
                if sock.recv(65536):
                    continue  # the answer (426, 405...) before the close
            except ConnectionResetError:
                pass
            del still_open[sock.fileno()]
        return len(still_open) <= left_open
    wait_until(enough_closed, timeout, lambda: "the server closing %d of %d sockets (%d still open)"
               % (len(socks) - left_open, len(socks), len(still_open)))


# -- TLS clients ----------------------------------------------------------------------

# --tls-key-type's values, as README.rst lists them (not greenbridge's own list: a key type
# it dropped must fail a test, not leave it out).
KEY_TYPES = ["ed25519", "p256", "p384", "rsa2048", "rsa4096"]



def client_context(trusted_pem=None, certificate=None, maximum_version=None,
                   minimum_version=None):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if trusted_pem is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=trusted_pem.decode("ascii"))
    if certificate is not None:
        context.load_cert_chain(*certificate)
    if maximum_version is not None:
        context.maximum_version = maximum_version
    if minimum_version is not None:
        context.minimum_version = minimum_version
    return context


@contextmanager
def tls_connection(port, context=None, server_hostname="localhost", session=None):
    """A new TLS connection to 127.0.0.1:`port` (`context` trusts anything when not given;
    `session` resumes a session)."""
    context = context or client_context()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname=server_hostname, session=session) as tls:
        yield tls


def certificate_of(tls):
    return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def served_certificate(port, context=None, server_hostname="localhost"):
    """The certificate a new handshake gets (see tls_connection), as a cryptography object."""
    with tls_connection(port, context, server_hostname) as tls:
        return certificate_of(tls)


def wait_each_worker_serves(bridge, wanted, context=None, server_hostname="localhost",
                            workers=2, timeout=30):
    """Open TLS connections until each of the bridge's `workers` workers, told apart by the
    kernel, has served a certificate for which `wanted(certificate)` holds."""
    serving = set()

    def each_serves():
        with tls_connection(bridge.port, context, server_hostname) as tls:
            if wanted(certificate_of(tls)):
                serving.add(worker_holding(bridge, tls))
        return len(serving) >= workers
    wait_until(each_serves, timeout, lambda: "each of %d workers serving the wanted certificate "
               "(only %s did):\n%s" % (workers, sorted(serving) or "none", bridge.log))


# -- the command line -----------------------------------------------------------------

REQUIRED = ["-e", "php", "-s", ECHO_PHP]


def config_refusal(args, environment=None):
    """The one-line complaint start-up makes of `args`, asked of load_config in this process
    (what parse_config prints after "greenbridge: error: " before it exits with 2)."""
    with pytest.raises(ConfigError) as refused:
        load_config(args, environment)
    message = str(refused.value)
    assert "\n" not in message, message
    return message


def run_cli(*args, env=None, timeout=30, **popen_options):
    environment = dict(os.environ)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "greenbridge", *args], cwd=REPO,
                          env=environment, capture_output=True, text=True, timeout=timeout,
                          **popen_options)


def php_lib_path():
    """What `greenbridge --php-lib` prints, asked of the installed command as a user runs it
    (the console script next to the venv's python)."""
    command = os.path.join(os.path.dirname(sys.executable), "greenbridge")
    result = subprocess.run([command, "--php-lib"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# -- list options in each form --------------------------------------------------------


def list_option_sources(form, lists, tmp_path):
    """(flags, environment) giving each list option of `lists` {(key, variable): values}
    in one form: 'environment' (a,b), 'environment list' ([a, b]), 'config file'
    (a, b) or 'config file list' ([a, b])."""
    flags, environment = [], {}
    separator = "," if form == "environment" else ", "
    texts = {option: ("[%s]" if form.endswith("list") else "%s") % separator.join(values)
             for option, values in lists.items()}
    if form.startswith("environment"):
        environment = {variable: text for (_key, variable), text in texts.items()}
    else:
        config_file = tmp_path / "lists.conf"
        config_file.write_text("".join("%s = %s\n" % (key, text)
                                       for (key, _variable), text in texts.items()))
        flags = ["-c", str(config_file)]
    return flags, environment


LIST_FORMS = ["environment", "environment list", "config file", "config file list"]


# -- fuzzing --------------------------------------------------------------------------

# Close codes a peer may send (RFC 6455 7.4.1 and 7.4.2, plus the registered 1012-1014).
SENDABLE_CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
                        1014, *range(3000, 5000)}


@st.composite
def mutated(draw, original):
    """`original` with a few bytes replaced, inserted, deleted, or cut short."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        operation = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if operation == "replace" and data:
            data[position] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=40))
        elif operation == "delete" and data:
            del data[position:position + draw(st.integers(1, 20))]
        elif operation == "truncate":
            del data[position:]
    return bytes(data)


@st.composite
def split(draw, data):
    """`data` cut into pieces at random offsets (empty pieces included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    return [data[start:end] for start, end in zip([0] + cuts, cuts + [len(data)])]


# -- README.rst as the tests read it --------------------------------------------

README = os.path.join(REPO, "README.rst")


def readme_document():
    """README.rst parsed by docutils; any warning fails (halt_level 2)."""
    import docutils.core

    with open(README, encoding="utf-8") as readme:
        return docutils.core.publish_doctree(
            readme.read(), settings_overrides={"report_level": 5, "halt_level": 2})


def readme_snippet(name):
    """The text of the literal block that follows the comment ``.. snippet: NAME`` in
    README.rst, so a test runs what a user reads rather than a copy of it."""
    import docutils.nodes

    document = readme_document()
    marker = "snippet: " + name
    found = False
    for node in document.findall(lambda node: isinstance(
            node, (docutils.nodes.comment, docutils.nodes.literal_block))):
        if isinstance(node, docutils.nodes.comment):
            found = found or node.astext().strip() == marker
        elif found:
            return node.astext()
    raise AssertionError("README.rst has no literal block after '.. %s'" % marker)


def readme_command(name, replacements=()):
    """The greenbridge command of the README's ``.. snippet: NAME``, ready for Bridge:
    (program, arguments).

    Only what must change to run it here changes: a leading ``scripts/setup.sh &&`` is
    dropped (it has run: the tests run in the .venv it made), the program is the
    greenbridge.py of that .venv, the (old, new) `replacements` are applied, and ``-P 0``
    is added (the README's port may be taken)."""
    text = readme_snippet(name).replace("\\\n", " ")
    for old, new in replacements:
        assert old in text, "README snippet %r no longer has %r" % (name, old)
        text = text.replace(old, new)
    program, *arguments = shlex.split(text.rpartition("&&")[2])
    assert os.path.basename(program) == "greenbridge.py", text
    return os.path.join(os.path.dirname(sys.executable), "greenbridge.py"), [*arguments, "-P", "0"]


def output_until(process, wanted, timeout=20):
    """What `process` (stdout a pipe) printed, read until `wanted` (bytes) is in it, it
    closed its output or `timeout` passed."""
    shown = b""
    deadline = time.monotonic() + timeout
    while wanted not in shown and time.monotonic() < deadline:
        if select.select([process.stdout], [], [], 1)[0]:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            shown += chunk
    return shown


@functools.lru_cache(maxsize=None)
def readme_option_table():
    """{flag: environment variable} of every row of README.rst's option tables (those with an
    "environment variable" column; empty where a flag has none)."""
    import docutils.nodes

    rows = {}
    for table in readme_document().findall(docutils.nodes.table):
        header, *body = [[entry.astext() for entry in row.findall(docutils.nodes.entry)]
                         for row in table.findall(docutils.nodes.row)]
        if "environment variable" in header:
            column = header.index("environment variable")
            rows.update((cells[0].split()[0], cells[column]) for cells in body
                        if cells[0].startswith("--"))
    return rows


def chat_conf(name):
    """A setting of conf/chat.conf (the chat tutorial's key and secret), as its reader has it."""
    with open(os.path.join(REPO, "conf", "chat.conf"), encoding="utf-8") as conf:
        for line in conf:
            key, equals, value = line.partition("=")
            if equals and key.strip() == name:
                return value.strip()
    raise AssertionError("conf/chat.conf sets no %s" % name)


# -- connection tokens (the reference is PyJWT; these are the ones it would not make) ----

TOKEN_SECRET = "a-secret-of-at-least-32-bytes-for-hs256"


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header, payload, sign_with=None):
    """A JWT written by hand: any header, any payload text, an HMAC-SHA256 signature with
    `sign_with` (bytes) or none."""
    signing_input = "%s.%s" % (_b64url(json.dumps(header).encode()), _b64url(payload.encode()))
    signature = b""
    if sign_with is not None:
        mac = hmac.HMAC(sign_with, hashes.SHA256())
        mac.update(signing_input.encode())
        signature = mac.finalize()
    return signing_input + "." + _b64url(signature)


# -- channels -------------------------------------------------------------------------


def connection_token(secret, user, channels=(), info=None):
    """A connection token for `user` (the ``sub``) and `channels`, signed HS256 by PyJWT."""
    import jwt

    claims = {"sub": user, "channels": list(channels)}
    if info is not None:
        claims["info"] = info
    return jwt.encode(claims, secret, algorithm="HS256")


def php_command(ws, op, **fields):
    """Send one command to tests/php/channels.php; what the library returned (ok, error)."""
    ws.send(json.dumps(dict(op=op, **fields)))
    answer = json.loads(ws.recv(timeout=10))
    assert answer["op"] == op
    return answer["ok"], answer["error"]


# -- Redis (--broker) -----------------------------------------------------------------


class RedisServer:
    """A real redis-server on its own loopback port, persistence off; stopped by PID. It can
    be SIGKILLed and started again on the same port (an empty Redis, as after a crash with
    persistence off), or SIGSTOPped (a Redis that does not answer). With `tls_directory`, it
    speaks TLS only, with a certificate for 127.0.0.1 from a CA of its own written there
    (``ca_path``)."""

    def __init__(self, tls_directory=None):
        self.port = free_port()
        self.process = None
        self._tls = None
        if tls_directory is not None:
            from certs import make_ca

            ca = make_ca("the test Redis's CA")
            self.ca_path = ca.write(tls_directory, "redis-ca")[0]
            self._tls = ca.issue("127.0.0.1", names=("127.0.0.1",)).write(tls_directory, "redis")
        self.start()

    @property
    def url(self):
        if self._tls is not None:
            return "rediss://127.0.0.1:%d/0?ssl_ca_certs=%s" % (self.port, self.ca_path)
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        listening = ["--port", str(self.port)]
        if self._tls is not None:
            certificate, key = self._tls
            listening = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file",
                         certificate, "--tls-key-file", key, "--tls-auth-clients", "no"]
        self.process = subprocess.Popen(
            ["redis-server", *listening, "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_until(lambda: self.ping() or self.process.poll() is not None, 10,
                   "redis-server answering PING on port %d" % self.port)
        assert self.process.poll() is None, "redis-server exited: %s" % self.process.stdout.read()

    def ping(self):
        try:
            return self.command("PING") == b"+PONG\r\n"
        except OSError:
            return False

    def command(self, *words):
        """One command in RESP, its whole answer as bytes (the tests' own client)."""
        request = b"*%d\r\n" % len(words) + b"".join(
            b"$%d\r\n%s\r\n" % (len(word), word) for word in
            (word.encode() if isinstance(word, str) else word for word in words))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            if self._tls is not None:
                import ssl

                sock = ssl.create_default_context(cafile=self.ca_path).wrap_socket(
                    sock, server_hostname="127.0.0.1")
            sock.sendall(request)
            return sock.recv(65536)

    def kill(self):
        """SIGKILL (by PID): Redis vanishes with everything it held."""
        self.process.kill()
        self.process.wait(10)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped one would not hear SIGTERM
        stop_process(self.process)


# -- several nodes over Redis -----------------------------------------------------------

NODE_API_KEY = "the-api-key-of-the-node-tests"
NODE_TOKEN_SECRET = "the-token-secret-of-the-node-tests-0123456"
# What every node of the tests runs with (conftest's start_node): a dead node leaves
# presence within 3 s; a Redis call fails after 1 s.
NODE_FLAGS = ("--node-ttl", "3", "--broker-timeout", "1", "--admin-port", "0",
              "--api-key", NODE_API_KEY, "--token-secret", NODE_TOKEN_SECRET,
              "--subscribe-route", "/live",
              "--route", "/c=%s,mode=framed" % os.path.join(REPO, "tests", "php", "channels.php"))


def node_ready(node):
    return http_get(admin_port(node), "/readyz")[0] == 200


@contextmanager
def node_subscriber(node, user, channels=(), info=None):
    """A subscribe-route client of `node` (see NODE_FLAGS), once its subscriptions are
    live: it shows in the presence of each of its channels (written once Redis confirmed
    them)."""
    token = connection_token(NODE_TOKEN_SECRET, user, channels, info)
    with connect(node.url("/live?token=" + token)) as ws:
        for channel in channels:
            wait_until(lambda: client_in(node, channel, user), 10,
                       "%s in the presence of %s" % (user, channel))
        yield ws


def client_in(node, channel, user):
    """Whether `user` has a connection in the presence of `channel` (asked of node's API)."""
    from cent import PresenceRequest

    presence = node.api.presence(PresenceRequest(channel=channel)).presence
    return any(entry.user == user for entry in presence.values())


def assert_api_sees_ann_twice_and_bob(api):
    """What the API answers while "ann" is subscribed to chat:1 and chat:2 (with info
    {"name": "Ann"}) and, on another connection, to chat:1, and "bob" to news."""
    from cent import ChannelsRequest, PresenceRequest, PresenceStatsRequest

    presence = api.presence(PresenceRequest(channel="chat:1")).presence
    assert sorted((entry.user, json.dumps(entry.conn_info)) for entry in presence.values()) \
        == [("ann", "null"), ("ann", '{"name": "Ann"}')]
    assert all(client_id == entry.client for client_id, entry in presence.items())
    stats = api.presence_stats(PresenceStatsRequest(channel="chat:1"))
    assert (stats.num_clients, stats.num_users) == (2, 1)
    channels = api.channels(ChannelsRequest()).channels
    assert {name: info.num_clients for name, info in channels.items()} \
        == {"chat:1": 2, "chat:2": 1, "news": 1}
    assert sorted(api.channels(ChannelsRequest(pattern="chat:*")).channels) \
        == ["chat:1", "chat:2"]
