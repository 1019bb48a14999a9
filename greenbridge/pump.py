"""The forwarding loops, one greenlet each, and what they count.

Back-pressure comes from blocking: each loop holds at most one message or one
read while its destination is slow, so neither side can make the bridge
buffer without bound. How messages become bytes and back is the message
mode's business (modes.py).

A loop returns why it stopped: an Ending (endings.py), or PHP_ENDED when PHP
closed its socket (its exit status, which the connection waits for, decides
the ending).
"""

import collections
import logging
import socket
import time

import gevent
from gevent.event import AsyncResult, Event
from geventwebsocket.exceptions import WebSocketError

from greenbridge import endings, modes
from greenbridge.frames import OPCODE_PING
from greenbridge.logs import connection_fields

log = logging.getLogger("greenbridge.pump")

# A pump stopped because PHP closed its socket.
PHP_ENDED = "php"

# PHP that does not read must not hold teardown for long.
_PHP_CLOSE_FRAME_TIMEOUT = 1.0
# While PHP is not reading, look this often whether the client is still there.
CLIENT_CHECK_INTERVAL = 1.0


class Traffic:
    """Bytes each way and the time of the last message, for timeouts and the access log."""

    __slots__ = ("to_php", "to_client", "last_activity")

    def __init__(self):
        self.to_php = 0
        self.to_client = 0
        self.last_activity = time.monotonic()


class PhpWriter:
    """Writes to PHP's socket (through its sockets.FastIO) in the connection's message mode.

    Two greenlets write: the client's messages and the replies to PHP's control
    frames. A write that finishes at once cannot be interleaved (gevent
    switches only when one waits); one that waits makes the other wait its
    turn. That costs a message two attribute checks, not a lock.
    """

    def __init__(self, php_io, mode):
        self.io = php_io
        self.socket = php_io.socket
        self.mode = mode
        # True inside sendall. A pump killed there leaves a cut frame: nothing may follow it.
        self.writing = False
        self._waiting = collections.deque()  # Events of writers waiting for their turn

    def send(self, data, client_connected):
        """Write whole frames (a message, a reply); False if the client left while PHP was
        not reading them."""
        while self.writing:  # the other writer is inside a frame (or cut one: then never)
            self._wait_for_turn()
        self.writing = True
        delivered = _send_while_client_connected(self.io, data, client_connected)
        self.writing = not delivered  # a cut message: nothing may follow it
        if self._waiting:
            self._waiting.popleft().set()
        return delivered

    def _wait_for_turn(self):
        turn = Event()
        self._waiting.append(turn)
        turn.wait()

    def finish(self, code, reason):
        """Framed mode: tell PHP how the client went (a close frame), then end our side."""
        if self.mode != modes.FRAMED or self.writing:
            return
        try:
            with gevent.Timeout(_PHP_CLOSE_FRAME_TIMEOUT):
                self.socket.sendall(modes.encode_close(code, reason))
            self.socket.shutdown(socket.SHUT_WR)  # PHP reads EOF after the close frame
        except (OSError, gevent.Timeout):
            pass


def client_to_php(websocket, php_writer, traffic):
    """Write each client message to PHP, encoded for the message mode."""
    encode, mode = modes.encode_message, php_writer.mode
    while True:
        message = websocket.receive_message()
        if message is None:
            return websocket.ending
        opcode, payload = message
        try:
            delivered = php_writer.send(encode(mode, opcode, payload), websocket.client_connected)
        except OSError:
            return PHP_ENDED
        if not delivered:
            websocket.mark_disconnected()
            return websocket.ending
        traffic.to_php += len(payload)
        traffic.last_activity = time.monotonic()


def _send_while_client_connected(php_io, data, client_connected):
    """sendall to PHP that gives up (False) if the client leaves while PHP is not reading.

    Without it a PHP script that stops reading would hold its process and
    both sockets until it exits, long after the client has gone.
    """
    sent = php_io.send_now(data)
    if sent == len(data):
        return True  # the usual case: no wait, so no timer
    view = memoryview(data)
    while sent < len(view):
        timer = gevent.Timeout(CLIENT_CHECK_INTERVAL)
        timer.start()
        try:
            sent += php_io.socket.send(view[sent:])
        except gevent.Timeout as fired:
            if fired is not timer:
                raise
            if not client_connected():
                return False
        finally:
            timer.close()
    return True


def php_to_client(php_io, websocket, buffer_size, early_data, decoder, traffic, connection_id,
                  answer_control):
    """Send the messages PHP writes to the client, as the message mode cuts them.

    `answer_control(request)` answers PHP's control frames (framed mode):
    None, or why the connection ends.
    """
    data = early_data
    ended = False
    while True:
        events = decoder.feed(data)
        if ended:
            events += decoder.end()
        for event in events:
            if type(event) is not tuple:  # not an (opcode, payload) message
                if type(event) is modes.ControlRequest:
                    stop = answer_control(event)
                    if stop is None:
                        continue
                    return stop
                return _php_ending(event, connection_id)
            opcode, payload = event
            try:
                websocket.send_frame(payload, opcode)
            except (OSError, WebSocketError):
                return endings.CLIENT_UNREACHABLE  # unless the WebSocket's ending came first
            traffic.to_client += len(payload)
            traffic.last_activity = time.monotonic()
        if ended:
            return PHP_ENDED
        try:
            data = php_io.recv(buffer_size)
        except OSError:
            data = b""
        ended = not data


def answer_control(php_writer, websocket, answer, request):
    """Write PHP the reply `answer(request)` makes; None, or why the connection ends."""
    try:
        delivered = php_writer.send(answer(request), websocket.client_connected)
    except OSError:
        # PHP closed its socket: what it wrote before still goes to the client,
        # and its reads tell the end.
        return None
    if not delivered:
        websocket.mark_disconnected()
        return websocket.ending
    return None


def _php_ending(event, connection_id):
    """The Ending for a decoder's Close or PhpProtocolError (logged: PHP's mistake)."""
    if isinstance(event, modes.PhpProtocolError):
        log.warning("%s; closing with %d", event, event.code,
                    extra=connection_fields(connection_id))
    return endings.from_php(event)


class Heartbeat:
    """Pings a client that sent nothing for `interval` seconds; gives up after `timeout` more.

    No greenlet waits between checks (each would hold a stack per idle
    connection): a hub timer starts a short greenlet for each check.
    ``result`` receives the Ending when the heartbeat ends the connection.

    While PHP is slow to take the client's last message, nobody reads the
    client's frames (pongs included): that is back-pressure, not a dead client.
    """

    __slots__ = ("result", "_websocket", "_php_writer", "_interval", "_timeout", "_pinged_at",
                 "_php_busy_at", "_timer", "_check_greenlet")

    def __init__(self, websocket, php_writer, interval, timeout):
        self.result = AsyncResult()
        self._websocket = websocket
        self._php_writer = php_writer
        self._interval = interval
        self._timeout = timeout
        self._pinged_at = None
        # When a check last found PHP slow to take a message: the client counts as heard then.
        self._php_busy_at = 0.0
        self._timer = None
        self._check_greenlet = None
        self._check_in(interval)

    def stop(self):
        self._timer.close()
        if self._check_greenlet is not None:
            self._check_greenlet.kill(block=False)

    def _check_in(self, delay):
        if self._timer is not None:
            self._timer.close()
        self._timer = gevent.get_hub().loop.timer(delay)
        self._timer.start(self._start_check)

    def _start_check(self):
        # In the hub: sending a ping may wait, so the check gets a greenlet.
        self._check_greenlet = gevent.spawn(self._check_once)

    def _check_once(self):
        try:
            self._check()
        finally:
            self._check_greenlet = None  # nothing (not even a dead greenlet) held between checks

    def _check(self):
        websocket = self._websocket
        if self._php_writer.writing:
            self._php_busy_at = time.monotonic()
        heard_at = max(websocket.last_received, self._php_busy_at)
        if self._pinged_at is not None:
            if heard_at < self._pinged_at:
                self.result.set(endings.no_pong(self._timeout))
                return
            self._pinged_at = None
        idle_for = time.monotonic() - heard_at
        if idle_for < self._interval:
            self._check_in(self._interval - idle_for)
            return
        self._pinged_at = time.monotonic()
        try:
            with gevent.Timeout(self._timeout):
                websocket.send_frame(b"greenbridge", OPCODE_PING)
        except gevent.Timeout:
            self.result.set(endings.no_pong(self._timeout))
            return
        except (OSError, WebSocketError):
            self.result.set(endings.CLIENT_UNREACHABLE)  # unless the WebSocket's ending came first
            return
        self._check_in(max(0.0, self._pinged_at + self._timeout - time.monotonic()))
