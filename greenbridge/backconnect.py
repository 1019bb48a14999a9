"""The back-connection listener and the connection-ID registry.

Each PHP process connects here and sends its connection ID and a newline.
The listener greenlet pairs that socket with the connection greenlet waiting
on the ID's AsyncResult. Anything unexpected closes only that one socket.

Strangers may open sockets here and send nothing. Each has ID_LINE_TIMEOUT
to send its ID line, and at most a few per PHP process allowed
(--max-processes) wait at once: a newer one drops the oldest (handshake.py's
register), so a flood of silent sockets cannot take the descriptors that
real clients and their PHP processes need.
"""

import errno
import hashlib
import hmac
import logging
import os
import uuid
from socket import SO_SNDBUF, SOL_SOCKET

import gevent
from gevent import socket
from gevent.event import AsyncResult

from greenbridge.handshake import PendingHandshakes
from greenbridge.logs import RateLimitedLog, format_address

log = logging.getLogger("greenbridge.backconnect")

# PHP writes its ID line in one write right after connect() returns, which
# is often before the server even accepts; only a PHP descheduled between the
# two calls on an overloaded machine is late, by far less than this.
ID_LINE_TIMEOUT = 2.0
# Back-connections waiting for their ID line, per PHP process allowed: room
# for every PHP process connecting at once, and for retries, several times over.
UNIDENTIFIED_PER_PROCESS = 4
ID_LINE_MAX_BYTES = 128
# Out of descriptors: wait this long before accepting again.
ACCEPT_BACKOFF = 0.1
# accept() errors that mean "no resources right now", not "the listener is broken".
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class BackConnection:
    """A PHP process's socket, and the bytes it sent right after its ID line."""

    __slots__ = ("socket", "early_data")

    def __init__(self, sock, early_data):
        self.socket = sock
        self.early_data = early_data


class BackConnectListener:
    def __init__(self, listener, socket_buffer_size, max_processes, metrics):
        """`listener` is a bound, listening socket (a worker's own)."""
        self._listener = listener
        self._unidentified = PendingHandshakes(
            UNIDENTIFIED_PER_PROCESS * max_processes, ID_LINE_TIMEOUT,
            name="back-connections", awaited="ID line", who="back-connection from")
        self._socket_buffer_size = socket_buffer_size
        self._metrics = metrics
        # Keyed by an HMAC of the ID under a per-process secret: how long a
        # lookup takes depends on digests an attacker cannot relate to real
        # IDs, so timing the refusals tells nothing about them.
        self._secret = os.urandom(32)
        self._pending = {}
        self._accept_greenlet = None
        self._log_accept_error = RateLimitedLog(log, logging.ERROR)
        # A flood of bad back-connections must not flood the log too.
        self._log_refusal = RateLimitedLog(log, logging.WARNING)

    @property
    def address(self):
        """(host, port) PHP connects to; the real port even when 0 was asked for."""
        return self._listener.getsockname()[:2]

    def start(self):
        self._accept_greenlet = gevent.spawn(self._accept_forever)

    def close(self):
        if self._accept_greenlet is not None:
            self._accept_greenlet.kill()
        self._listener.close()

    def expect(self, connection_id):
        """Register an ID; the returned AsyncResult receives its BackConnection."""
        pending = AsyncResult()
        self._pending[self._key(connection_id)] = pending
        return pending

    def forget(self, connection_id):
        """The ID no longer pairs (its connection paired, gave up or ended)."""
        self._pending.pop(self._key(connection_id), None)

    def _key(self, connection_id):
        return hmac.new(self._secret, connection_id.encode("ascii"), hashlib.sha256).digest()

    def _accept_forever(self):
        while True:
            try:
                sock, peer = self._listener.accept()
            except OSError as error:
                if error.errno in OUT_OF_RESOURCES:
                    self._log_accept_error("back-connection accept failed: %s; retrying",
                                           error.strerror)
                    gevent.sleep(ACCEPT_BACKOFF)
                    continue
                if error.errno in (errno.ECONNABORTED, errno.EINTR, errno.EAGAIN):
                    continue
                raise
            gevent.spawn(self._identify, sock, peer)
            # Let it register (dropping the oldest silent socket past the cap)
            # and read what PHP already sent before the next accept: a burst
            # of connections then never holds more descriptors than the cap.
            gevent.sleep(0)

    def _identify(self, sock, peer):
        with self._unidentified.budget(sock, peer) as budget:
            try:
                connection_id, early_data = self._read_id_line(sock)
            except _Refused as refusal:
                if not budget.aborted:  # the register logged why it shut the socket down
                    self._log_refusal("back-connection from %s refused: %s",
                                      format_address(peer), refusal)
                self._metrics.backconnect_rejects.inc()
                sock.close()
                return
        pending = self._pending.pop(self._key(connection_id), None)
        if pending is None:
            self._log_refusal("back-connection from %s refused: unknown or already used ID %s",
                              format_address(peer), connection_id)
            self._metrics.backconnect_rejects.inc()
            sock.close()
            return
        sock.settimeout(None)
        sock.setsockopt(SOL_SOCKET, SO_SNDBUF, self._socket_buffer_size)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending.set(BackConnection(sock, early_data))

    @staticmethod
    def _read_id_line(sock):
        """Read "ID\\n" within the length cap; keep what follows it.

        The time limit is the register's: it shuts the socket down."""
        received = b""
        while b"\n" not in received:
            if len(received) > ID_LINE_MAX_BYTES:
                raise _Refused("ID line longer than %d bytes" % ID_LINE_MAX_BYTES)
            try:
                chunk = sock.recv(4096)
            except OSError as error:
                raise _Refused("read failed: %s" % error) from None
            if not chunk:
                raise _Refused("closed before sending an ID line")
            received += chunk
        line, _, early_data = received.partition(b"\n")
        if len(line) > ID_LINE_MAX_BYTES:
            raise _Refused("ID line longer than %d bytes" % ID_LINE_MAX_BYTES)
        try:
            connection_id = str(uuid.UUID(line.strip().decode("ascii")))
        except (ValueError, UnicodeDecodeError):
            raise _Refused("malformed ID %r" % line[:40]) from None
        return connection_id, early_data


class _Refused(Exception):
    pass
