"""A wss:// client for the tests that is safe with websockets' two threads.

websockets' sync client reads in a background thread while the caller
writes. Python's ssl sockets are not safe for that: a TLS 1.3 session ticket
processed by the reader while the writer sends the upgrade request loses the
request about once in a hundred connections, and the test hangs waiting for
a 101 the server never had a request for. (A single-threaded client never
sees it; browsers are not affected.) Here the TLS object is only touched under
a lock; the blocking socket reads happen outside it.
"""

import socket
import ssl
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from websockets.sync.client import connect

_READ_SIZE = 65536


class LockedTLSSocket:
    """A client TLS connection over memory BIOs, one lock around the TLS object."""

    def __init__(self, tcp_socket, context, server_hostname):
        self._tcp = tcp_socket
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing,
                                     server_hostname=server_hostname)
        self._lock = threading.Lock()
        while not self._step(self._tls.do_handshake):
            self._feed()

    def _step(self, operation, *args):
        """One TLS call under the lock; (True, result), or False when it needs more input."""
        with self._lock:
            try:
                result = operation(*args)
            except ssl.SSLWantReadError:
                return False
            finally:
                pending = self._outgoing.read()
                if pending:
                    self._tcp.sendall(pending)
        return True, result

    def _feed(self):
        data = self._tcp.recv(_READ_SIZE)  # blocks, outside the lock
        with self._lock:
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()

    def recv(self, size):
        while True:
            try:
                done = self._step(self._read_buffered, size)
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                return b""
            if done:
                return done[1]
            self._feed()

    def _read_buffered(self, size):
        """Everything decryptable now, up to `size`: websockets waits in select()
        before each recv, which cannot see records already in the memory BIO."""
        data = self._tls.read(size)
        while len(data) < size:
            try:
                more = self._tls.read(size - len(data))
            except (ssl.SSLWantReadError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                break
            if not more:
                break
            data += more
        return data

    def sendall(self, data):
        view = memoryview(data).cast("B")
        while view:
            done = self._step(self._tls.write, view)
            if not done:
                self._feed()
                continue
            view = view[done[1]:]

    def getpeercert(self, binary_form=False):
        return self._tls.getpeercert(binary_form)

    def version(self):
        return self._tls.version()

    def __getattr__(self, name):
        # settimeout, shutdown, close, family, setsockopt... act on the TCP socket.
        return getattr(self._tcp, name)


def connect_wss(url, ssl, server_hostname=None, open_timeout=20, **kwargs):
    """websockets' connect() for a wss:// URL, over a LockedTLSSocket."""
    parts = urlsplit(url)
    assert parts.scheme == "wss", url
    deadline = time.monotonic() + open_timeout
    tcp_socket = socket.create_connection((parts.hostname, parts.port), timeout=open_timeout)
    try:
        tls_socket = LockedTLSSocket(tcp_socket, ssl, server_hostname or parts.hostname)
        tcp_socket.settimeout(None)
        # TLS is already on: websockets speaks plain HTTP over the socket it is given.
        return connect(urlunsplit(("ws",) + tuple(parts[1:])), sock=tls_socket,
                       open_timeout=max(deadline - time.monotonic(), 1), **kwargs)
    except BaseException:
        tcp_socket.close()
        raise
