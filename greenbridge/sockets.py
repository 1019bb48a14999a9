"""Receiving and sending on the data path, with as little work per message as possible.

gevent's socket methods are Python code around each system call, and a
receive that finds nothing raises (and builds) an exception before it waits.
For a plain TCP socket (PHP's always; the client's without TLS) ``FastIO``
calls read and write on the descriptor itself, and after a receive that
drained the socket it waits for readability first, so a message costs one
receive, not two. A TLS socket has bytes buffered above the descriptor: it
keeps gevent's methods.
"""

import os

from gevent.socket import socket as GeventSocket

from greenbridge.adapters.gevent_hub import ReadableWatch


def send_all(sock, data):
    """Like sendall, in one system call when the kernel takes everything (the usual case).

    gevent's sendall asks the kernel for the send buffer size (getsockopt)
    and goes through several Python layers on every call; on the data path
    that was a fifth of the bridge's time per message.
    """
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def fast_io(sock):
    """FastIO for a plain socket, else the socket itself (same recv, recv_into, send)."""
    return FastIO(sock) if type(sock) is GeventSocket else sock


class FastIO:
    """recv, recv_into and send of a plain gevent socket, on its descriptor.

    Only one greenlet receives through it at a time (a pump); ``close`` it
    before the socket is closed.
    """

    __slots__ = ("socket", "_fd", "_readable", "_drained")

    def __init__(self, sock):
        self.socket = sock
        self._fd = sock.fileno()
        # Waits in the hub without a Waiter object per wait (a kill or a
        # Timeout is thrown in just the same); a stray wake-up is harmless, as
        # the read that follows finds nothing and waits again.
        self._readable = ReadableWatch(self._fd)
        # Nothing is known to be waiting: the first receive waits first.
        self._drained = True

    def recv(self, size):
        while True:
            if self._drained:
                self._readable.wait()
            try:
                data = os.read(self._fd, size)
            except BlockingIOError:
                self._drained = True
                continue
            # A full read may have left more behind: then read again at once.
            self._drained = len(data) < size
            return data

    def recv_into(self, buffer):
        while True:
            if self._drained:
                self._readable.wait()
            try:
                received = os.readv(self._fd, [buffer])
            except BlockingIOError:
                self._drained = True
                continue
            self._drained = received < len(buffer)
            return received

    def send(self, data):
        """Send what the kernel takes now; wait (through gevent) only when it takes nothing."""
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return self.socket.send(data)

    def send_now(self, data):
        """Send what the kernel takes now, never waiting (0 when it takes nothing)."""
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0

    def sendall(self, data):
        self.socket.sendall(data)

    def close(self):
        self._readable.close()
