"""One PHP process: its environment, spawning, output relay, and ending it.

PHP runs in its own process group (a new session), so ending the group also
ends whatever children the script started.
"""

import json
import logging
import os
import signal

import gevent
from gevent import subprocess

log = logging.getLogger("greenbridge.php")

# Output lines longer than this are logged cut, so a runaway script cannot
# flood the log or make the relay hold megabytes.
LOG_LINE_MAX_BYTES = 8192
_RELAY_JOIN_TIMEOUT = 1.0


def build_environment(base_environment, request, connection_id, back_connect_address,
                      message_mode, subprotocol):
    """The environment PHP sees: the server's own (minus WSS_CONFIG_*) plus WSS_* values."""
    tcp_host, tcp_port = back_connect_address
    environment = dict(base_environment)
    environment.update({
        "WSS_ENABLED": "1",
        "WSS_CONNECTION_ID": connection_id,
        "WSS_CLIENT_IP": request.client_ip,
        "WSS_CLIENT_PORT": str(request.client_port),
        "WSS_SERVER_HOST": request.server_host,
        "WSS_SERVER_PORT": str(request.server_port),
        "WSS_REQUEST_URI": request.uri,
        "WSS_REQUEST_PATH": request.path,
        "WSS_REQUEST_QUERY": request.query,
        "WSS_REQUEST_HEADERS": json.dumps(request.headers, ensure_ascii=False),
        "WSS_TCP_HOST": tcp_host,
        "WSS_TCP_PORT": str(tcp_port),
        "WSS_MESSAGE_MODE": message_mode,
    })
    if subprotocol:
        environment["WSS_SUBPROTOCOL"] = subprotocol
    for header, variable in HEADER_VARIABLES.items():
        if header in request.headers:
            environment[variable] = request.headers[header]
    environment.update(request.tls_variables)
    return environment


# Request headers that PHP also gets as variables of their own, when sent.
HEADER_VARIABLES = {
    "sec-websocket-protocol": "WSS_SEC_WEBSOCKET_PROTOCOL",
    "sec-websocket-version": "WSS_SEC_WEBSOCKET_VERSION",
    "origin": "WSS_ORIGIN",
    "user-agent": "WSS_USER_AGENT",
    "host": "WSS_HOST",
    "x-forwarded-for": "WSS_X_FORWARDED_FOR",
    "x-real-ip": "WSS_X_REAL_IP",
}


class PhpProcess:
    """A running PHP script and the greenlets relaying its stdout and stderr to the log."""

    def __init__(self, popen, connection_id):
        self._popen = popen
        self.pid = popen.pid
        self.connection_id = connection_id
        self._ended = False
        self._relays = [
            gevent.spawn(_relay_lines, popen.stdout, connection_id, "stdout", logging.INFO),
            gevent.spawn(_relay_lines, popen.stderr, connection_id, "stderr", logging.WARNING),
        ]

    @classmethod
    def spawn(cls, command, environment, connection_id):
        """Start the script; raises OSError when it cannot be started."""
        popen = subprocess.Popen(
            command, env=environment, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, close_fds=True)
        return cls(popen, connection_id)

    @property
    def exit_event(self):
        """Waitable that becomes ready when the process exits."""
        return self._popen.result

    @property
    def returncode(self):
        """None while running; the exit status, or -signal when a signal killed it."""
        return self._popen.poll()

    def wait(self, timeout):
        """The exit status, or None when it still runs after `timeout` seconds."""
        try:
            return self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def end(self, grace):
        """Let it exit on its own, else SIGTERM the group, SIGKILL it, reap, close the pipes.

        The caller has closed PHP's socket already: a script that sees EOF gets
        `grace` seconds to finish by itself, then `grace` more after SIGTERM.
        """
        if self._ended:
            return
        self._ended = True
        if self.wait(grace) is None:
            self._signal_group(signal.SIGTERM)
            self.wait(grace)
        # Children of the script may outlive it; the group goes in any case.
        self._signal_group(signal.SIGKILL)
        self._popen.wait()
        gevent.joinall(self._relays, timeout=_RELAY_JOIN_TIMEOUT)
        gevent.killall(self._relays)
        for pipe in (self._popen.stdout, self._popen.stderr):
            pipe.close()

    def kill_now(self):
        """For an immediate exit: SIGKILL the group without waiting."""
        if self._ended:
            return
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum):
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def describe_exit(returncode):
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return "killed by %s" % signal.Signals(-returncode).name
        except ValueError:
            return "killed by signal %d" % -returncode
    return "exit status %d" % returncode


def _relay_lines(pipe, connection_id, stream_name, level):
    """Log each line the script writes, cut to LOG_LINE_MAX_BYTES, never blocking PHP."""
    try:
        while True:
            line = pipe.readline(LOG_LINE_MAX_BYTES)
            if not line:
                return
            if not line.endswith(b"\n"):
                dropped = _skip_rest_of_line(pipe)
                if dropped:
                    line += b"... [%d more bytes]" % dropped
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            log.log(level, "[%s] %s: %s", connection_id, stream_name, text)
    except (OSError, ValueError):
        # The pipe was closed under us during teardown.
        return


def _skip_rest_of_line(pipe):
    dropped = 0
    while True:
        chunk = pipe.readline(LOG_LINE_MAX_BYTES)
        if not chunk:
            return dropped
        dropped += len(chunk)
        if chunk.endswith(b"\n"):
            return dropped - 1
