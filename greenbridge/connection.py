"""One connection's lifecycle, run in its own greenlet.

spawn PHP -> wait for its back-connection -> two pumps -> teardown. The
connection owns the process, both sockets and both pumps, and closes them all
in one place (``_teardown``), whatever ended it.

How it ends is one Ending (endings.py), decided once in ``run``: from the
close requested (the server shutting down), else what ended first (a pump,
the heartbeat, a timeout), else why PHP never connected back. The teardown
closes the WebSocket with it; what the client did before (its close, a
protocol error, leaving), which the WebSocket recorded as it happened, stays
the ending.
"""

import functools
import logging
import time
import uuid

import gevent
from gevent.event import AsyncResult

from greenbridge import endings
from greenbridge import modes, pump
from greenbridge.channels.tokens import without_token
from greenbridge.php_channels import PhpChannelRequests
from greenbridge.logs import connection_fields
from greenbridge.sockets import FastIO
from greenbridge.php_environment import CONNECT_BACK_HINT, build_environment
from greenbridge.process import PhpProcess, describe_exit, explain_early_end

log = logging.getLogger("greenbridge.connection")
access_log = logging.getLogger("greenbridge.access")

# Waits between spawn attempts (the last value repeats).
_SPAWN_BACKOFF = (0.1, 0.2, 0.4, 0.8)


class Connection:
    def __init__(self, config, php_inherited_environment, backconnect, request, websocket,
                 metrics, endpoint, channels, broker):
        """`channels` is the process's ChannelHub, where this connection's Subscriber is
        (app.serve holds it there); PHP's publications go through `broker`."""
        self.id = str(uuid.uuid4())
        self._config = config
        self._php_inherited_environment = php_inherited_environment
        self._metrics = metrics
        self._backconnect = backconnect
        self._request = request
        self._websocket = websocket
        self._endpoint = endpoint
        self._channels = channels
        self._broker = broker
        self._close_request = AsyncResult()
        self._process = None
        self._php_socket = None
        self._php_writer = None
        self._traffic = pump.Traffic()

    @property
    def traffic(self):
        return self._traffic

    @property
    def ending(self):
        """How the connection ended (an Ending), once it did."""
        return self._websocket.ending

    @property
    def php_running(self):
        return self._process is not None and self._process.returncode is None

    def request_close(self, ending):
        """Ask the connection to end with this Ending (from another greenlet)."""
        if not self._close_request.ready():
            self._close_request.set(ending)

    def kill_process_now(self):
        if self._process is not None:
            self._process.kill_now()

    def run(self):
        started = time.monotonic()
        pending = self._backconnect.expect(self.id)
        ending = endings.INTERNAL_ERROR
        try:
            back_connection = self._start_php(pending)
            if back_connection is not None:
                ending = self._bridge(back_connection)
            elif self._close_request.ready():
                ending = self._close_request.value
            else:  # unless the client left meanwhile (the WebSocket recorded it)
                ending = endings.PHP_NOT_CONNECTED
        finally:
            self._backconnect.forget(self.id)
            if self._php_socket is None and pending.ready():
                # PHP connected back after we stopped waiting.
                pending.value.socket.close()
            self._teardown(ending)
            self._log_access(started)

    def _start_php(self, pending):
        """Spawn PHP (retrying) until it connects back; None when it never does.

        A client that leaves meanwhile ends the wait: on a starved machine PHP
        can take longer to start than the client is willing to wait, and a
        process started for nobody only slows the others down.
        """
        client_gone = gevent.spawn(self._wait_until_client_gone)
        try:
            back_connection = self._spawn_until_connected(pending, client_gone)
            if back_connection is None and client_gone.ready():
                log.warning("client left while PHP was starting", extra=connection_fields(self.id))
                self._websocket.mark_disconnected()
            return back_connection
        finally:
            client_gone.kill()

    def _wait_until_client_gone(self):
        while self._websocket.client_connected():
            gevent.sleep(pump.CLIENT_CHECK_INTERVAL)

    def _spawn_until_connected(self, pending, client_gone):
        """The back-connection, or None. When no attempt connects, one line tells
        why the last one failed (earlier ones go to the debug log): PHP's output
        has its own lines, and a broken script fails the same way every time."""
        config = self._config
        endpoint = self._endpoint
        command = [config.php_executable, endpoint.script, *config.php_args]
        environment = build_environment(self._php_inherited_environment, self._request,
                                        self.id, self._backconnect.address, endpoint)
        deadline = time.monotonic() + config.php_connect_timeout
        attempts = 1 + config.php_connect_retries
        failure = None  # why the last attempt failed
        for attempt in range(1, attempts + 1):
            if failure is not None:
                log.debug("%s; trying again", failure, extra=connection_fields(self.id))
                backoff = _SPAWN_BACKOFF[min(attempt - 2, len(_SPAWN_BACKOFF) - 1)]
                if gevent.wait([client_gone, self._close_request], timeout=backoff, count=1):
                    break
            try:
                self._process = PhpProcess.spawn(command, environment, self.id)
            except OSError as error:
                self._metrics.spawn_failures.inc()
                failure = "spawning PHP failed (attempt %d of %d): %s" % (attempt, attempts, error)
                continue
            spawned = time.monotonic()
            remaining = max(0.0, deadline - spawned)
            gevent.wait([pending, self._process.exit_event, self._close_request, client_gone],
                        timeout=remaining, count=1)
            if pending.ready():
                self._metrics.connect_back_seconds.observe(time.monotonic() - spawned)
                back_connection = pending.value
                self._php_socket = back_connection.socket
                return back_connection
            if self._close_request.ready() or client_gone.ready():
                break
            if self._process.returncode is None:
                failure = "PHP did not connect back within %gs; %s" % (
                    config.php_connect_timeout, CONNECT_BACK_HINT)
                break
            self._end_process()  # reads PHP's output to its end: its error message with it
            returncode = self._process.returncode
            failure = "PHP ended before connecting back (%s; attempt %d of %d): %s" % (
                describe_exit(returncode), attempt, attempts,
                explain_early_end(returncode, self._process.last_error))
        if failure is not None:
            log.warning("%s", failure, extra=connection_fields(self.id))
        return None

    def _bridge(self, back_connection):
        """Pump both ways until one side ends; return the Ending."""
        config = self._config
        traffic = self._traffic
        mode = self._endpoint.message_mode
        php_io = FastIO(self._php_socket)
        self._php_writer = pump.PhpWriter(php_io, mode)
        answer_control = functools.partial(
            pump.answer_control, self._php_writer, self._websocket,
            PhpChannelRequests(self._channels, self._broker,
                               self._channels.client(self.id)).answer)
        pumps = [
            gevent.spawn(pump.client_to_php, self._websocket, self._php_writer, traffic),
            gevent.spawn(pump.php_to_client, php_io, self._websocket,
                         config.buffer_size, back_connection.early_data,
                         modes.decoder(mode, config.max_message_size), traffic, self.id,
                         answer_control),
        ]
        heartbeat = None
        watched = list(pumps)  # what may end the connection: the pumps, the heartbeat
        if config.ping_interval:
            heartbeat = pump.Heartbeat(self._websocket, self._php_writer,
                                       config.ping_interval, config.ping_timeout)
            watched.append(heartbeat.result)
        try:
            return self._wait_for_end(watched)
        finally:
            if heartbeat is not None:
                heartbeat.stop()
            gevent.killall(pumps)
            php_io.close()

    def _wait_for_end(self, watched):
        """Wait for a pump or the heartbeat to end, a close request or a timeout."""
        config = self._config
        php_started = time.monotonic()
        while True:
            now = time.monotonic()
            deadlines = []
            if config.php_timeout:
                deadlines.append(php_started + config.php_timeout)
            if config.connection_timeout:
                deadlines.append(self._traffic.last_activity + config.connection_timeout)
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            gevent.wait(watched + [self._close_request], timeout=timeout, count=1)

            if self._close_request.ready():
                return self._close_request.value
            for finished in watched:
                if finished.ready():
                    return self._ending_after(finished.value)
            now = time.monotonic()
            if config.php_timeout and now >= php_started + config.php_timeout:
                return endings.php_timeout(config.php_timeout)
            if config.connection_timeout and \
                    now >= self._traffic.last_activity + config.connection_timeout:
                return endings.idle_timeout(config.connection_timeout)

    def _ending_after(self, ended):
        """The Ending for what a pump (or the heartbeat) returned."""
        if ended is pump.PHP_ENDED:
            # PHP closed its socket; its exit status (if it exits now) decides the code.
            status = self._process.wait(timeout=self._config.php_kill_grace)
            return endings.php_ended(describe_exit(status) if status else None)
        if type(ended) is endings.Ending:
            return ended
        return endings.BRIDGE_ERROR  # a pump failed

    def _teardown(self, ending):
        """Carry out the ending: the client's close frame, PHP told (framed mode) and its
        socket closed, the process ended."""
        websocket = self._websocket
        websocket.close(ending)  # what the WebSocket recorded before stays its ending
        if self._php_writer is not None:
            # PHP gets the client's close as it came (its reason may be empty), else the ending.
            told = websocket.close_received or websocket.ending
            self._php_writer.finish(told.code, told.reason)
        if self._php_socket is not None:
            self._php_socket.close()
        self._end_process()

    def _end_process(self):
        if self._process is not None:
            self._process.end(self._config.php_kill_grace)

    def _log_access(self, started):
        php = "not started" if self._process is None else describe_exit(self._process.returncode)
        log_access(self.id, self._request, started, self._traffic, self._websocket.ending, php)


def log_access(connection_id, request, started, traffic, ending, php):
    """The one access line of a connection that ran (`php`: what became of its process)."""
    access_log.info(
        "%s:%d %s %.3fs in=%d out=%d close=%s %r php=%s",
        request.client_ip, request.client_port, without_token(request.uri),
        time.monotonic() - started, traffic.to_php, traffic.to_client,
        ending.code, ending.reason, php, extra=connection_fields(connection_id))
