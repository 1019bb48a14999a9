"""The broker: what the server API and PHP publications ask of "all the channels".

One small interface, so that nothing above it knows whether the channels live
in this process (``LocalBroker``), in the workers of one host
(``workers.WorkerLinks``), or on several nodes over Redis
(``redis_broker.RedisBroker``). Presence entries are plain dicts in the API's
shape (``{"client", "user", "conn_info"}``).

The interface:

- ``publish(publication)``: a StreamPosition when the channel keeps history,
  else None; BrokerUnavailable when nobody could receive it;
- ``subscribe/unsubscribe(user, channel, client_id=None)`` and
  ``disconnect(user, client_id, keep, code, reason)``: act on a user's
  connections wherever they are;
- ``presence(channel)``, ``channels(pattern)``, ``nodes()`` (``info``'s entries);
- ``keeps_history``: True when publications are kept (``--history-size``);
- ``history(channel, limit, since, reverse)``: a HistoryPage, or
  UnrecoverablePosition when `since` is from another epoch;
  ``history_remove(channel)``;
- ``live(channel)``: returns once publications to `channel` reach this
  node's hub (recovery.py reads the history after it);
- ``not_ready_because()``: None, or why /readyz must not say ready;
- ``close()``.
"""

import secrets

from greenbridge import endings
from greenbridge.channels.node import Node

# Centrifugo's history_meta_ttl: how long a channel's position (its top offset and epoch)
# outlives its last use, so that a client that missed nothing still resumes after the
# history itself expired.
META_TTL = 30 * 24 * 3600


def new_epoch():
    """A fresh epoch: short, random, and without ":" (recover=<channel>:<offset>:<epoch>)."""
    return secrets.token_hex(4)


class BrokerUnavailable(Exception):
    """The broker cannot do it now (Redis down or too slow); the message is one line."""


class UnrecoverablePosition(Exception):
    """A `since` position this channel's history cannot continue from (another epoch)."""


def presence_entry(subscriber):
    """What presence says of one subscriber, in the API's shape."""
    return {"client": subscriber.client_id, "user": subscriber.user,
            "conn_info": subscriber.conn_info}


class StreamPosition:
    """Where a channel's stream is: the offset of its last publication and the epoch
    that offsets count in (a new epoch when the history was lost and began again)."""

    __slots__ = ("offset", "epoch")

    def __init__(self, offset, epoch):
        self.offset = offset
        self.epoch = epoch

    def __eq__(self, other):
        return isinstance(other, StreamPosition) and \
            (self.offset, self.epoch) == (other.offset, other.epoch)

    def __repr__(self):
        return "StreamPosition(%d, %r)" % (self.offset, self.epoch)


class HistoryPage:
    """What ``history`` answers: publications (each with its offset and epoch), oldest
    first unless asked in reverse, and the stream's current position."""

    __slots__ = ("publications", "position")

    def __init__(self, publications, position):
        self.publications = publications
        self.position = position


class LocalBroker:
    """The channels of this process: the hub itself, and `history` (a
    history.ChannelHistory, or None: no history kept)."""

    def __init__(self, hub, node=None, history=None):
        self._hub = hub
        self._node = node or Node()
        self._history = history

    @property
    def keeps_history(self):
        return self._history is not None

    def publish(self, publication):
        position = None
        if self._history is not None:
            position = self._history.add(publication)
        self._hub.publish(publication)
        return position

    def history(self, channel, limit, since=None, reverse=False):
        return self._history.get(channel, limit, since, reverse)

    def history_remove(self, channel):
        self._history.remove(channel)

    def live(self, channel):
        """Publications reach this hub as they are made: nothing to wait for."""

    def subscribe(self, user, channel, client_id=None):
        """Subscribe the user's connections (or its one connection `client_id`); SubscriptionError."""
        for subscriber in self._clients(user, client_id):
            self._hub.subscribe(subscriber, channel)

    def unsubscribe(self, user, channel, client_id=None):
        for subscriber in self._clients(user, client_id):
            self._hub.unsubscribe(subscriber, channel)

    def disconnect(self, user, client_id, keep, code, reason):
        for subscriber in self._clients(user, client_id):
            if subscriber.client_id not in keep:
                subscriber.disconnect(endings.disconnected(code, reason))

    def presence(self, channel):
        return [presence_entry(subscriber) for subscriber in self._hub.presence(channel)]

    def channels(self, pattern=None):
        return self._hub.channels(pattern)

    def nodes(self):
        """``info``'s entries: this node only."""
        return [self._node.entry(self.counts())]

    def counts(self):
        """This node's numbers for ``info``."""
        channels = self._hub.channels()
        return {"num_clients": self._hub.num_clients, "num_users": self._hub.num_users,
                "num_channels": len(channels), "num_subs": sum(channels.values())}

    def not_ready_because(self):
        return None

    def close(self):
        pass

    def _clients(self, user, client_id):
        if client_id is None:
            return self._hub.clients_of(user)
        subscriber = self._hub.client(client_id)
        return [subscriber] if subscriber is not None and subscriber.user == user else []
