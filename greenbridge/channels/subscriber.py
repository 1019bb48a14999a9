"""A connection's side of channels: who it is and its bounded outgoing queue.

Publishing never waits for a subscriber: a delivery appends the
publication's shared frame to the subscriber's queue, and the subscriber's
writer greenlet (there only while something is queued) sends what is queued
in one write. A subscriber whose queue would pass its limit has fallen too far
behind: it is ended (close 1008) once, its queue dropped, and the others go on
getting every publication in order.
"""

import collections
import logging

import gevent
from geventwebsocket.exceptions import WebSocketError

from greenbridge import endings

log = logging.getLogger("greenbridge.channels")

# At most this much is joined into one write, so one send does not copy a huge backlog.
_WRITE_BATCH_BYTES = 256 * 1024


class Subscriber:
    """One connection that can receive publications.

    `send_frames(data)` sends whole encoded frames to the client (raising
    OSError or WebSocketError once it is gone); `end(ending)` asks the
    connection to end with an Ending, without waiting (it runs in the publisher's greenlet). `queue_limit` is the bytes that may wait to be sent.
    """

    __slots__ = ("client_id", "user", "conn_info", "envelope", "_send_frames", "_end",
                 "_queue_limit", "_queue", "_queued_bytes", "_writer", "fell_behind")

    def __init__(self, client_id, user, conn_info, envelope, send_frames, end, queue_limit):
        self.client_id = client_id
        self.user = user  # the token's ``sub``; "" for an anonymous connection
        self.conn_info = conn_info  # the token's ``info`` (any JSON value), or None
        self.envelope = envelope  # publications wrapped in {"channel": ..., "data": ...}
        self._send_frames = send_frames
        self._end = end
        self._queue_limit = queue_limit
        self._queue = collections.deque()
        self._queued_bytes = 0
        self._writer = None
        self.fell_behind = False

    def deliver(self, publication):
        """Queue the publication's frame; False when this subscriber cannot take it."""
        if self.fell_behind:
            return False
        frame = publication.frame(self.envelope)
        if self._queued_bytes and self._queued_bytes + len(frame) > self._queue_limit:
            self._fall_behind()
            return False
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        if self._writer is None:
            self._writer = gevent.spawn(self._write_queued)
        return True

    def disconnect(self, ending):
        """Ask the connection to end with `ending` (the server API's disconnect)."""
        self._end(ending)

    @property
    def queued_bytes(self):
        return self._queued_bytes

    def close(self):
        """The connection ended: stop writing and let the queue go."""
        writer, self._writer = self._writer, None
        if writer is not None and writer is not gevent.getcurrent():
            writer.kill(block=False)
        self._drop_queue()

    def _write_queued(self):
        queue = self._queue
        try:
            while queue:
                frames = [queue.popleft()]
                size = len(frames[0])
                while queue and size + len(queue[0]) <= _WRITE_BATCH_BYTES:
                    frames.append(queue.popleft())
                    size += len(frames[-1])
                self._send_frames(frames[0] if len(frames) == 1 else b"".join(frames))
                if self.fell_behind:
                    return  # the queue was dropped meanwhile
                self._queued_bytes -= size
        except (OSError, WebSocketError):
            # The client is gone; its connection ends on its own and closes this subscriber.
            self._drop_queue()
        finally:
            if self._writer is gevent.getcurrent():
                self._writer = None

    def _fall_behind(self):
        self.fell_behind = True
        log.warning("client %s: subscriber too slow, %d bytes queued (--subscriber-queue-size "
                    "%d); closing it", self.client_id, self._queued_bytes, self._queue_limit)
        self._drop_queue()
        self._end(endings.SUBSCRIBER_TOO_SLOW)

    def _drop_queue(self):
        self._queue.clear()
        self._queued_bytes = 0
