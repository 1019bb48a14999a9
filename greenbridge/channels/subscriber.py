"""A connection's side of channels: who it is and its bounded outgoing queue.

Publishing never waits for a subscriber: a delivery appends the
publication's shared frame to the subscriber's queue. Once the greenlet that
publishes lets the event loop run, every subscriber with frames queued gets
them in one write, as far as its socket takes them without waiting: the
publications of one burst cost one system call per client, and no greenlet.
What its socket does not take at once, the subscriber's writer greenlet
(there only then) sends, waiting as needed. A subscriber whose queue would
pass its limit has fallen too far behind: it is ended (close 1008) once, its
queue dropped, and the others go on getting every publication in order.

While a channel is being recovered (recovery.py), its publications are held
aside, counted against the same limit, until ``resume`` queues what was
missed first; a subscriber recovering nothing pays one check for it.
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

    `outlet` writes to the client: ``send_frames(data)`` sends whole encoded
    frames (waiting as needed), ``send_frames_now(data)`` sends what can go
    without waiting and returns how much went (when part of a frame went, the
    client is held for ``send_rest(rest)``, which must come next); all raise
    OSError or WebSocketError once the client is gone. `end(ending)` asks the
    connection to end with an Ending, without waiting (it runs in the publisher's
    greenlet). `queue_limit` is the bytes that may wait to be sent.
    """

    __slots__ = ("client_id", "user", "conn_info", "envelope", "_outlet", "_end",
                 "_queue_limit", "_queue", "_queued_bytes", "_rest", "_due", "_writer",
                 "_held", "fell_behind")

    def __init__(self, client_id, user, conn_info, envelope, outlet, end, queue_limit):
        self.client_id = client_id
        self.user = user  # the token's ``sub``; "" for an anonymous connection
        self.conn_info = conn_info  # the token's ``info`` (any JSON value), or None
        self.envelope = envelope  # publications wrapped in {"channel": ..., "data": ...}
        self._outlet = outlet
        self._end = end
        self._queue_limit = queue_limit
        # Made when a frame is queued, let go once all is sent: an idle subscriber has none.
        self._queue = None
        self._queued_bytes = 0
        self._rest = None  # the rest of a frame the client got only part of
        self._due = False  # in the loop's next write of queued frames
        self._writer = None
        self._held = None  # a _Held while channels are being recovered
        self.fell_behind = False

    def deliver(self, publication):
        """Queue the publication's frame; False when this subscriber cannot take it."""
        if self.fell_behind:
            return False
        if self._held is not None and publication.channel in self._held:
            return self._hold(publication)
        frame = publication.frame(self.envelope)
        if self._queued_bytes and self._queued_bytes + len(frame) > self._queue_limit:
            self._fall_behind()
            return False
        if self._queue is None:
            self._queue = collections.deque()
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        if not self._due and self._writer is None:
            self._due = True
            _writes_due.add(self)
        return True

    def hold(self, channel):
        """Hold the publications of `channel` aside until ``resume(channel, ...)``."""
        if self._held is None:
            self._held = _Held()
        self._held[channel] = []

    def resume(self, channel, first, position):
        """Deliver `first` (publications, or anything with ``frame(envelope)``), then the
        held publications of `channel` that come after `position` (all of them when it is
        None), then deliver as usual. False when this subscriber fell behind."""
        if self._held is None or channel not in self._held:
            return False  # its queue was let go meanwhile: too slow, or gone
        held = self._held.pop(channel)
        self._held.bytes -= sum(len(each.frame(self.envelope)) for each in held)
        if not self._held:
            self._held = None
        for each in first:
            if not self.deliver(each):
                return False
        for each in held:
            if position is None or each.epoch != position.epoch or each.offset > position.offset:
                if not self.deliver(each):
                    return False
        return True

    def _hold(self, publication):
        held = self._held
        size = len(publication.frame(self.envelope))
        if self._queued_bytes + held.bytes + size > self._queue_limit:
            self._fall_behind()
            return False
        held[publication.channel].append(publication)
        held.bytes += size
        return True

    def disconnect(self, ending):
        """Ask the connection to end with `ending` (the server API's disconnect)."""
        self._end(ending)

    @property
    def queue_limit(self):
        return self._queue_limit

    @property
    def queued_bytes(self):
        return self._queued_bytes

    def close(self):
        """The connection ended: stop writing and let the queue go."""
        writer, self._writer = self._writer, None
        if writer is not None and writer is not gevent.getcurrent():
            writer.kill(block=False)
        self._drop_queue()

    def write_due(self):
        """In the event loop: send what is queued, as far as the socket takes it at once."""
        self._due = False
        queue = self._queue
        if not queue or self._writer is not None:
            return  # ended meanwhile, or its writer sends
        data = self._take_batch(queue)
        try:
            sent = self._outlet.send_frames_now(data)
        except (OSError, WebSocketError):
            self._drop_queue()  # gone: its connection ends on its own and closes this subscriber
            return
        self._queued_bytes -= sent
        if sent == len(data):
            if not queue:
                self._queue = None
                return
        elif sent:
            self._rest = data[sent:]  # sent first, under the send lock the outlet kept
        else:
            queue.appendleft(data)
        self._writer = gevent.spawn(self._write_queued)  # for what did not go at once

    def _write_queued(self):
        outlet = self._outlet
        try:
            if self._rest is not None:
                rest, self._rest = self._rest, None
                outlet.send_rest(rest)
                if self.fell_behind:
                    return  # the queue was dropped meanwhile
                self._queued_bytes -= len(rest)
            while self._queue:  # read again after each send: close() may have let it go
                data = self._take_batch(self._queue)
                outlet.send_frames(data)
                if self.fell_behind:
                    return  # the queue was dropped meanwhile
                self._queued_bytes -= len(data)
            self._queue = None
        except (OSError, WebSocketError):
            # The client is gone; its connection ends on its own and closes this subscriber.
            self._drop_queue()
        finally:
            if self._writer is gevent.getcurrent():
                self._writer = None

    @staticmethod
    def _take_batch(queue):
        """Frames from the front of `queue`, joined, up to _WRITE_BATCH_BYTES (one at least)."""
        frames = [queue.popleft()]
        size = len(frames[0])
        while queue and size + len(queue[0]) <= _WRITE_BATCH_BYTES:
            frames.append(queue.popleft())
            size += len(frames[-1])
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def _fall_behind(self):
        self.fell_behind = True
        log.warning("client %s: subscriber too slow, %d bytes queued (--subscriber-queue-size "
                    "%d); closing it", self.client_id, self._queued_bytes, self._queue_limit)
        self._drop_queue()
        self._end(endings.SUBSCRIBER_TOO_SLOW)

    def _drop_queue(self):
        self._queue = self._rest = self._held = None
        self._queued_bytes = 0


class _Held(dict):
    """Channel -> the publications held aside while it is recovered, and their bytes."""

    __slots__ = ("bytes",)

    def __init__(self):
        super().__init__()
        self.bytes = 0


class _WritesDue:
    """The subscribers with frames queued since the event loop last ran its callbacks:
    written together, once per turn of the loop, after the greenlet that publishes
    let it run."""

    def __init__(self):
        self._subscribers = []

    def add(self, subscriber):
        if not self._subscribers:
            gevent.get_hub().loop.run_callback(self._write)
        self._subscribers.append(subscriber)

    def _write(self):
        subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            subscriber.write_due()


_writes_due = _WritesDue()
