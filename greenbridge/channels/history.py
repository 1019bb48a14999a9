"""In-memory history of channels (without ``--broker``), with Centrifugo's semantics.

Each channel with history keeps its last ``--history-size`` publications; the
publications expire ``--history-ttl`` seconds after the channel's last one.
The channel's position (its top offset and its epoch) outlives them for
META_TTL: a client that missed nothing can still resume after the TTL, and
one that missed some is told that they are gone. A channel's history begins
at offset 1 in a new random epoch; the epoch changes only when the position
itself was forgotten, so "same epoch" means "the offsets count the same stream".

Memory stays bounded without anyone reading: the deadlines are kept in a
heap and a greenlet, there only while something is due, lets the expired
publications and forgotten positions go.
"""

import collections
import heapq
import time

import gevent

from greenbridge.channels.broker import (META_TTL, HistoryPage, StreamPosition,
                                         UnrecoverablePosition, new_epoch)


class _Stream:
    __slots__ = ("epoch", "top", "publications", "expires", "forgotten", "scheduled")

    def __init__(self):
        self.epoch = new_epoch()
        self.top = 0
        # Made at the first publication, let go when they expire: a position alone is small.
        self.publications = None
        self.expires = None  # when the publications go (None: there are none)
        self.forgotten = None  # when the position goes
        self.scheduled = None  # the deadline it is in the heap for

    @property
    def position(self):
        return StreamPosition(self.top, self.epoch)

    @property
    def next_deadline(self):
        return self.forgotten if self.expires is None else min(self.expires, self.forgotten)


class ChannelHistory:
    """The history of every channel of this process (one ``LocalBroker``)."""

    def __init__(self, size, ttl, meta_ttl=META_TTL, clock=time.monotonic):
        self.size = size
        self.ttl = ttl
        self._meta_ttl = meta_ttl
        self._clock = clock
        self._streams = {}
        self._deadlines = []  # heap of (deadline, channel); stale ones are skipped
        self._stale = 0  # entries of the heap for a deadline since moved
        self._sweeper = None

    def __len__(self):
        """Channels whose position is kept."""
        return len(self._streams)

    def add(self, publication):
        """Keep `publication` (its offset and epoch set here); its StreamPosition."""
        now = self._clock()
        self.sweep(now)
        stream = self._stream(publication.channel, now)
        stream.top += 1
        publication.offset = stream.top
        publication.epoch = stream.epoch
        if stream.publications is None:
            stream.publications = collections.deque(maxlen=self.size)
        stream.publications.append(publication)
        stream.expires = now + self.ttl
        self._schedule(publication.channel, stream)
        return stream.position

    def get(self, channel, limit, since=None, reverse=False):
        """A HistoryPage: with `since`, the publications after it (before it in reverse),
        else from the oldest (newest in reverse); `limit` 0 gives only the position, -1
        all. UnrecoverablePosition when `since` is of another epoch."""
        now = self._clock()
        self.sweep(now)
        stream = self._stream(channel, now)  # a position asked for is one given out: keep it
        self._schedule(channel, stream)
        if since is not None and since.epoch != stream.epoch:
            raise UnrecoverablePosition("position of epoch %r; the stream's is %r"
                                        % (since.epoch, stream.epoch))
        if limit == 0:
            return HistoryPage([], stream.position)
        publications = stream.publications or ()
        if since is not None:
            if reverse:
                publications = [each for each in publications if each.offset < since.offset]
            else:
                publications = [each for each in publications if each.offset > since.offset]
        publications = list(reversed(publications)) if reverse else list(publications)
        if limit > 0:
            publications = publications[:limit]
        return HistoryPage(publications, stream.position)

    def remove(self, channel):
        """Drop the channel's publications; its position stays (Centrifugo's history_remove)."""
        stream = self._streams.get(channel)
        if stream is not None:
            stream.publications = stream.expires = None

    def sweep(self, now=None):
        """Let go what is due by `now`."""
        now = self._clock() if now is None else now
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, channel = heapq.heappop(deadlines)
            stream = self._streams.get(channel)
            if stream is None or stream.scheduled != deadline:
                self._stale -= 1
                continue
            stream.scheduled = None
            if stream.forgotten <= now:
                del self._streams[channel]
                continue
            if stream.expires is not None and stream.expires <= now:
                stream.publications = stream.expires = None
            self._schedule(channel, stream)

    def _stream(self, channel, now):
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream()
        stream.forgotten = now + self._meta_ttl
        return stream

    def _schedule(self, channel, stream):
        """One live heap entry per stream, at its next deadline or earlier (a stream met
        early is put back for its later one)."""
        deadline = stream.next_deadline
        if stream.scheduled is not None:
            if stream.scheduled <= deadline:
                return
            stream.scheduled = None
            self._stale += 1  # its entry stays in the heap until met, or the heap is rebuilt
            if self._stale > len(self._streams):
                self._rebuild()
        stream.scheduled = deadline
        heapq.heappush(self._deadlines, (deadline, channel))
        if self._sweeper is None:
            self._sweeper = gevent.spawn(self._sweep_while_due)

    def _rebuild(self):
        self._deadlines = [(stream.scheduled, channel) for channel, stream in self._streams.items()
                           if stream.scheduled is not None]
        heapq.heapify(self._deadlines)
        self._stale = 0

    def _sweep_while_due(self):
        try:
            while self._deadlines:
                gevent.sleep(max(0.0, self._deadlines[0][0] - self._clock()) + 0.01)
                self.sweep()
        finally:
            self._sweeper = None


def history_of(config):
    """The in-memory history ``--history-size`` asks for, or None."""
    return ChannelHistory(config.history_size, config.history_ttl) if config.history_size else None
