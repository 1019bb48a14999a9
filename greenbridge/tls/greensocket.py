"""A pyOpenSSL connection that waits like a gevent socket.

pyOpenSSL works on the descriptor itself, which gevent keeps non-blocking, so
OpenSSL answers "want read/write" instead of blocking; the wrapper then waits
for the descriptor in the hub and tries again. It offers what gevent's pywsgi
handler and greenbridge's WebSocket code use of a socket. TLS failures
surface as OSError, like any other broken connection.

One greenlet may read while another writes: each OpenSSL call here finishes
without switching, so two calls never overlap on the connection (unlike
threads, which OpenSSL does not allow to share one).
"""

import errno
import io

from gevent.exceptions import ConcurrentObjectUseError
from gevent.socket import wait_read, wait_write
from OpenSSL import SSL

from greenbridge.adapters.gevent_hub import wait_socket_readable, wait_socket_writable

# Bytes handed to one SSL_write: a few TLS records.
_WRITE_CHUNK = 64 * 1024


class TLSError(OSError):
    """A TLS protocol failure on one connection."""


class GreenTLSSocket:
    # No attribute is called ``_sock``: pywsgi would read the raw TCP socket through it.
    __slots__ = ("tls", "_tcp", "_fileno", "__weakref__")

    def __init__(self, tls_connection, tcp_socket):
        self.tls = tls_connection
        self._tcp = tcp_socket
        self._fileno = tcp_socket.fileno()

    def __repr__(self):
        # pywsgi names the socket in its error lines.
        return "<TLS socket fd=%d>" % self._fileno

    def _call(self, operation, *args):
        """Run one OpenSSL call to completion, waiting in the hub when it wants I/O."""
        while True:
            try:
                return operation(*args)
            except SSL.WantReadError:
                self._wait(wait_socket_readable, wait_read)
            except SSL.WantWriteError:
                self._wait(wait_socket_writable, wait_write)
            except SSL.ZeroReturnError:
                raise
            except SSL.SysCallError as error:
                code, message = error.args if len(error.args) == 2 else (-1, str(error))
                if code in (-1, 0):
                    raise ConnectionResetError(errno.ECONNRESET, "TLS: %s" % message) from None
                raise OSError(code, message) from None
            except SSL.Error as error:
                raise TLSError(errno.EPROTO, "TLS: %s" % describe_error(error)) from None

    def _wait(self, wait_on_socket, wait_for_descriptor):
        # The gevent socket's own watchers, as gevent's ssl module waits: its
        # close() cancels them and tells the loop the descriptor is gone.
        try:
            wait_on_socket(self._tcp)
        except ConcurrentObjectUseError:
            # The other greenlet waits on that event (a read that must write,
            # or the reverse, which TLS sometimes asks for): wait on our own.
            wait_for_descriptor(self._fileno, self._tcp.gettimeout())

    def do_handshake(self):
        self._call(self.tls.do_handshake)

    def recv(self, size):
        try:
            return self._call(self.tls.recv, size)
        except SSL.ZeroReturnError:  # the peer's close_notify: a clean end of stream
            return b""

    def recv_into(self, buffer, size=0):
        try:
            return self._call(self.tls.recv_into, buffer, size or None)
        except SSL.ZeroReturnError:
            return 0

    def send(self, data):
        """Write what one TLS write takes (at most _WRITE_CHUNK bytes); return the count."""
        return self._call(self.tls.send, memoryview(data).cast("B")[:_WRITE_CHUNK])

    def sendall(self, data):
        view = memoryview(data).cast("B")
        sent = 0
        while sent < len(view):
            # A retry after "want write" must pass the same bytes again; it does.
            sent += self._call(self.tls.send, view[sent:sent + _WRITE_CHUNK])

    def makefile(self, mode="rb", buffering=-1):
        if mode != "rb":
            raise ValueError("only 'rb' files are offered")
        return io.BufferedReader(_Reader(self),
                                 io.DEFAULT_BUFFER_SIZE if buffering in (-1, None) else buffering)

    def settimeout(self, timeout):
        self._tcp.settimeout(timeout)

    def gettimeout(self):
        return self._tcp.gettimeout()

    def fileno(self):
        return self._fileno

    def getsockname(self):
        return self._tcp.getsockname()

    def getpeername(self):
        return self._tcp.getpeername()

    def setsockopt(self, *args):
        self._tcp.setsockopt(*args)

    def getsockopt(self, *args):
        return self._tcp.getsockopt(*args)

    def shutdown(self, how):
        self._tcp.shutdown(how)

    def close(self):
        try:
            # One try at close_notify; a peer that does not read does not hold us.
            self.tls.shutdown()
        except SSL.Error:
            pass
        self._tcp.close()


class _Reader(io.RawIOBase):
    """The raw file under makefile(); closing it leaves the socket open, like socket.makefile."""

    def __init__(self, tls_socket):
        super().__init__()
        self._socket = tls_socket

    def readable(self):
        return True

    def readinto(self, buffer):
        return self._socket.recv_into(buffer, len(buffer))


def describe_error(error):
    """One line from an OpenSSL error, e.g. 'wrong version number'."""
    reasons = []
    for entry in error.args[0] if error.args and isinstance(error.args[0], list) else ():
        if isinstance(entry, tuple) and entry:
            reasons.append(str(entry[-1]))
    return ", ".join(reasons) or str(error) or type(error).__name__
