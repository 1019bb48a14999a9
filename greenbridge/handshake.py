"""Limits on what a connection does before it is a WebSocket: how long, how large, how many at once.

A client that connects and then sends its request slowly (slowloris) holds a
descriptor and a greenlet. These limits keep that cheap: each connection has
one budget of ``--handshake-timeout`` seconds from accept to its 101 answer
(TLS handshake, upgrade request, refusal, plain requests, unread request
bodies and keep-alive waits all spend the same budget), the request line and
headers get 16 KiB, and past ``--max-pending-handshakes`` the oldest pending
connection is dropped, so a crowd of slow clients cannot keep out a real
client, which finishes its handshake in milliseconds.

A connection out of budget has its socket shut down: whatever its greenlet
waits for (a TLS record, a header line, body bytes, the next request) ends
at once as a closed connection, in gevent's code as in ours, with no
exception thrown into code that would report it as a server error. The shut
down goes through the descriptor, as the socket object the server accepted
may have been replaced by a TLS one meanwhile (gevent's ssl under gunicorn).
"""

import logging
import socket
from collections import OrderedDict

import gevent
from gevent import get_hub

from greenbridge.logs import RateLimitedLog, format_address
from greenbridge.upgrade import Rejected

log = logging.getLogger("greenbridge.handshake")

# Request line and headers together.
MAX_HANDSHAKE_BYTES = 16 * 1024


class HandshakeTooLarge(Rejected, ValueError):
    """The request line and headers are over MAX_HANDSHAKE_BYTES (a ValueError to gevent,
    which answers it as the client's error)."""

    def __init__(self, reason):
        super().__init__("431 Request Header Fields Too Large", reason)


class HandshakeAborted(BaseException):
    """The connection ended before the request's header section did (the client
    left, or its budget ran out and its socket was shut down).

    A BaseException, so that gevent's request parsing (which turns Exceptions
    into 400 answers) lets it through to the handler, which ends quietly.
    """


class CappedReader:
    """The client's buffered stream, refusing to hand out more than `limit` bytes of lines.

    gevent reads the request line and http.client the headers, both only with
    ``readline(size)``. ``ended`` tells whether the stream ended on the way:
    http.client then takes what came as the whole header section.
    """

    def __init__(self, stream, limit):
        self.stream = stream
        self._left = limit
        self.ended = False

    @property
    def closed(self):
        return self.stream.closed

    def readline(self, size=-1):
        # One byte past the limit tells "exactly full" from "over".
        wanted = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        line = self.stream.readline(wanted)
        self.ended = not line.endswith(b"\n")
        self._left -= len(line)
        if self._left < 0:
            raise HandshakeTooLarge("request line and headers over %d bytes" % MAX_HANDSHAKE_BYTES)
        return line


def request_head_bytes(environ):
    """The size of the request line and headers, as far as a WSGI environ still tells it.

    Never more than the bytes that came (the path is unquoted, repeated
    headers are joined): what a handler let through is never refused here.
    """
    query = environ.get("QUERY_STRING", "")
    size = len("%s %s%s %s\r\n" % (environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""),
                                    "?" + query if query else "", environ.get("SERVER_PROTOCOL", "")))
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            size += len(key) - 5 + len(": \r\n") + len(value)
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            size += len(key) + len(": \r\n") + len(value)
    return size


class _Budget:
    """One connection's handshake budget: its socket, its deadline, where it is."""

    __slots__ = ("descriptor", "address", "deadline", "phase", "timer", "aborted")

    def __init__(self, sock, address, deadline, phase):
        # Open as long as the budget is counted: the server ends it before closing the socket.
        self.descriptor = sock.fileno()
        self.address = address
        self.deadline = deadline
        self.phase = phase
        self.timer = None
        self.aborted = False  # its socket was shut down (out of time, or dropped past the cap)

    def stop_clock(self):
        if self.timer is not None:
            self.timer.close()
            self.timer = None


class _BudgetBlock:
    """``with register.budget(...)`` (see PendingHandshakes.budget).

    Not a @contextmanager: its generator and frame would stay with every open connection.
    """

    __slots__ = ("_register", "_sock", "_address", "_phase", "_owner")

    def __init__(self, register, sock, address, phase):
        self._register = register
        self._sock = sock
        self._address = address
        self._phase = phase
        self._owner = False  # this block began the budget (not an outer block)

    def __enter__(self):
        outer = self._register.counted()
        if outer is not None:
            return outer
        budget = self._register.begin(self._sock, self._address, self._phase)
        self._owner = True
        self._sock = self._address = None  # the budget holds what it needs
        return budget

    def __exit__(self, *exc_info):
        if self._owner:
            self._register.end()


class PendingHandshakes:
    """The connections that are not WebSockets yet, each with its budget, oldest first.

    Keyed by the connection's greenlet: the server begins the budget at
    accept (``budget``), the handler ends it once the 101 is out (``end``).

    Other listeners that wait for a stranger's first words use it too: the
    admin listener (for its requests), the back-connection port (for ID
    lines). `name`, `awaited` and `who` word its log lines for them.
    """

    def __init__(self, limit, timeout, name="handshakes", awaited="complete upgrade request",
                 who="client"):
        self._limit = limit
        self._timeout = timeout
        self._name = name
        self._awaited = awaited
        self._who = who
        self._pending = OrderedDict()  # greenlet -> _Budget
        # Plain requests an application other than greenbridge is answering (under gunicorn).
        self._paused = {}
        self._log_cap = RateLimitedLog(log, logging.WARNING)
        self._log_abort = RateLimitedLog(log, logging.INFO)

    def __len__(self):
        return len(self._pending)

    def budget(self, sock, address, phase=None):
        """Count the calling greenlet's connection while the ``with`` block runs, or until ``end``.

        `phase` names where it is in log lines ("in the TLS handshake") until
        ``phase_over``. Inside an outer block (the TLS layer's) the outer budget goes on.
        The block gets the budget: its ``aborted`` tells whether the register shut the socket
        down.
        """
        return _BudgetBlock(self, sock, address, phase)

    def counted(self):
        """The calling greenlet's budget while it is counted, else None."""
        return self._pending.get(gevent.getcurrent())

    def begin(self, sock, address, phase):
        """Count the calling greenlet's connection (``budget`` does, for a ``with`` block)."""
        deadline = get_hub().loop.now() + self._timeout if self._timeout else None
        budget = _Budget(sock, address, deadline, phase)
        self._count(gevent.getcurrent(), budget)
        return budget

    def _count(self, connection, budget):
        while len(self._pending) >= self._limit:
            _, oldest = self._pending.popitem(last=False)
            self._log_cap("%d %s pending: dropping the oldest", self._limit, self._name)
            self._abort(oldest, "dropped for a newer client (%d %s pending)"
                        % (self._limit, self._name))
        self._pending[connection] = budget
        if budget.deadline is not None:
            loop = get_hub().loop
            budget.timer = loop.timer(max(0.0, budget.deadline - loop.now()))
            budget.timer.start(self._expire, connection)

    def _expire(self, connection):
        budget = self._pending.pop(connection, None)
        if budget is not None:
            self._abort(budget, "no %s within %gs" % (self._awaited, self._timeout))

    def _abort(self, budget, why):
        budget.stop_clock()
        budget.aborted = True
        self._log_abort("%s %s: %s%s", self._who, format_address(budget.address), why,
                        " (%s)" % budget.phase if budget.phase else "")
        try:
            # A second descriptor of the same connection (the family does not matter here).
            with socket.fromfd(budget.descriptor, socket.AF_INET, socket.SOCK_STREAM) as same:
                same.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client is gone already

    def phase_over(self):
        budget = self._pending.get(gevent.getcurrent())
        if budget is not None:
            budget.phase = None

    def pause(self):
        """A plain request is in another application's hands: its time is the application's."""
        connection = gevent.getcurrent()
        budget = self._pending.pop(connection, None)
        if budget is not None:
            budget.stop_clock()
            self._paused[connection] = budget

    def resume(self):
        """The application answered: an unread body or the next request spend what is left."""
        connection = gevent.getcurrent()
        budget = self._paused.pop(connection, None)
        if budget is not None:
            budget.phase = "after a plain request"
            self._count(connection, budget)

    def end(self):
        """The calling greenlet's connection is a WebSocket now, or closed."""
        connection = gevent.getcurrent()
        budget = self._pending.pop(connection, None) or self._paused.pop(connection, None)
        if budget is not None:
            budget.stop_clock()


# For servers that keep no register (a foreign WSGI server): nothing counted, no deadline.
UNLIMITED_HANDSHAKES = PendingHandshakes(float("inf"), 0)
