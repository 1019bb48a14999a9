"""Limits on the HTTP upgrade phase: how long it may take, how large it may be, how many at once.

A client that connects and then sends its request slowly (slowloris) holds a
descriptor and a greenlet. These limits keep that cheap: each handshake has
``--handshake-timeout`` seconds and 16 KiB, and past ``--max-pending-handshakes``
the oldest pending one is dropped, so a crowd of slow clients cannot keep out
a real client, which finishes its handshake in milliseconds.
"""

import logging
from collections import OrderedDict

import gevent
from gevent import Timeout

from greenbridge.logs import RateLimitedLog

log = logging.getLogger("greenbridge.handshake")

# Request line and headers together.
MAX_HANDSHAKE_BYTES = 16 * 1024


class HandshakeTooLarge(ValueError):
    """The request line and headers are over MAX_HANDSHAKE_BYTES."""


class HandshakeAborted(BaseException):
    """Raised in a handshake's greenlet to end it: too slow, or dropped for a newer one.

    A BaseException, like gevent's Timeout, so that gevent's request parsing
    (which turns Exceptions into 400 answers) lets it through.
    """


class CappedReader:
    """The client's buffered stream, refusing to hand out more than `limit` bytes of lines.

    gevent reads the request line and http.client the headers, both only with
    ``readline(size)``.
    """

    def __init__(self, stream, limit):
        self.stream = stream
        self._left = limit

    @property
    def closed(self):
        return self.stream.closed

    def readline(self, size=-1):
        # One byte past the limit tells "exactly full" from "over".
        wanted = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        line = self.stream.readline(wanted)
        self._left -= len(line)
        if self._left < 0:
            raise HandshakeTooLarge("request line and headers over %d bytes" % MAX_HANDSHAKE_BYTES)
        return line


class PendingHandshakes:
    """The upgrade requests still being read, each with its deadline, oldest first.

    Other listeners that wait for a stranger's first words use it too: the
    admin listener (for its requests), the back-connection port (for ID lines).
    `name` and `awaited` say what is pending and what it waits for in the log
    lines.
    """

    def __init__(self, limit, timeout, name="handshakes", awaited="complete upgrade request"):
        self._limit = limit
        self._timeout = timeout
        self._name = name
        self._awaited = awaited
        self._pending = OrderedDict()  # greenlet -> its Timeout (or None)
        self._log_drop = RateLimitedLog(log, logging.WARNING)

    def __len__(self):
        return len(self._pending)

    def begin(self):
        """Count the calling greenlet's handshake; it gets HandshakeAborted if too slow."""
        while len(self._pending) >= self._limit:
            oldest, timer = self._pending.popitem(last=False)
            if timer is not None:
                timer.close()
            self._log_drop("%d %s pending: dropping the oldest", self._limit, self._name)
            oldest.kill(HandshakeAborted("dropped for a newer client (%d %s pending)"
                                         % (self._limit, self._name)), block=False)
        timer = None
        if self._timeout:
            timer = Timeout(self._timeout, HandshakeAborted(
                "no %s within %gs" % (self._awaited, self._timeout)))
            timer.start()
        self._pending[gevent.getcurrent()] = timer

    def end(self):
        """The calling greenlet's handshake is over (read, refused or failed)."""
        timer = self._pending.pop(gevent.getcurrent(), None)
        if timer is not None:
            timer.close()


# For servers other than greenbridge's own (gunicorn): nothing counted, no deadline.
UNLIMITED_HANDSHAKES = PendingHandshakes(float("inf"), 0)
