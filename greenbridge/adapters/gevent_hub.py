"""Waiting in gevent's hub for a descriptor, as gevent does inside.

Checked against gevent 26.9.0.

ReadableWatch (the data path): ``hub.wait(watcher)`` makes a Waiter object for
each wait, about 0.7 us of some 5 us per wake-up. ReadableWatch starts the
loop's io watcher with the waiting greenlet's own ``switch`` and switches to
the hub, relying on what hub.wait does: the watcher's callback runs in the
hub and switches back into the greenlet; a kill or a Timeout is thrown in
through the same ``hub.switch()``.

wait_socket_readable/writable (the TLS socket): wait on a gevent socket's own
watchers (its private ``_read_event``/``_write_event``, through its ``_wait``),
as gevent's ssl module does, so that closing the socket cancels the wait and
tells the loop the descriptor is gone. ConcurrentObjectUseError when another
greenlet waits on the same watcher.
"""

from gevent import get_hub
from greenlet import getcurrent

CHECKED_AGAINST = {"gevent": "26.9.0"}

_READABLE = 1  # libev's and libuv's EV_READ


class ReadableWatch:
    """Sleeps the calling greenlet until a descriptor is readable; ``close`` it when done.

    A wake-up may be stray (another switch into the greenlet): the caller's
    read then finds nothing and waits again.
    """

    __slots__ = ("_hub", "_watcher")

    def __init__(self, fd):
        self._hub = get_hub()
        self._watcher = self._hub.loop.io(fd, _READABLE)

    def wait(self):
        self._watcher.start(getcurrent().switch)
        try:
            self._hub.switch()
        finally:
            self._watcher.stop()

    def close(self):
        self._watcher.close()


def wait_socket_readable(sock):
    sock._wait(sock._read_event)


def wait_socket_writable(sock):
    sock._wait(sock._write_event)
