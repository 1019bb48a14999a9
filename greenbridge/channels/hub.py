"""The channels of one process: who is subscribed to what.

The hub owns both sides of every subscription (channel -> subscribers and
subscriber -> channels), so a connection's subscriptions end with it in one
call and an empty channel disappears at once. Publishing hands the
publication to each subscriber of its channel, which queues the frame built
once for all of them; nothing here waits on a socket.
"""

import fnmatch

from greenbridge.channel_names import check_channel

# Subscriptions one connection may hold: a token or a script cannot make one
# connection cost the hub without bound.
MAX_SUBSCRIPTIONS_PER_CLIENT = 1024


class SubscriptionError(ValueError):
    """A subscription that cannot be made; the message is one line."""


class ChannelHub:
    """`watcher`, when given, hears of every subscription made and ended:
    ``subscribed(subscriber, channel, first)`` and ``unsubscribed(subscriber, channel,
    last)``, where `first`/`last` say the channel just got its first subscriber here or
    lost its last (a broker across nodes follows channels and presence with them). It
    must not wait: it is called from whatever greenlet subscribes."""

    def __init__(self, watcher=None):
        self.watcher = watcher
        self._subscribers_of = {}  # channel -> {Subscriber: None}, in subscription order
        self._channels_of = {}  # Subscriber -> set of channels
        self._clients = {}  # client ID -> Subscriber
        self.publications = 0
        self.deliveries = 0
        self.subscribers_too_slow = 0

    # -- clients -----------------------------------------------------------

    def add_client(self, subscriber):
        self._clients[subscriber.client_id] = subscriber
        self._channels_of[subscriber] = set()

    def remove_client(self, subscriber):
        """The connection ended: its subscriptions end, its queue is let go."""
        if self._clients.pop(subscriber.client_id, None) is None:
            return
        for channel in self._channels_of.pop(subscriber):
            self._drop_subscription(subscriber, channel)
        subscriber.close()

    def client(self, client_id):
        return self._clients.get(client_id)

    def clients_of(self, user):
        return [subscriber for subscriber in self._clients.values() if subscriber.user == user]

    @property
    def num_clients(self):
        return len(self._clients)

    @property
    def num_subscribed(self):
        """Clients with at least one subscription."""
        return sum(1 for channels in self._channels_of.values() if channels)

    @property
    def num_users(self):
        return len({subscriber.user for subscriber in self._clients.values()})

    # -- subscriptions ----------------------------------------------------

    def subscribe(self, subscriber, channel):
        """True when newly subscribed, False when it was already; SubscriptionError if refused."""
        check_channel(channel)
        channels = self._channels_of.get(subscriber)
        if channels is None:
            raise SubscriptionError("client %s is not connected" % subscriber.client_id)
        if channel in channels:
            return False
        if len(channels) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
            raise SubscriptionError("client %s has %d subscriptions, the most one connection "
                                    "may hold" % (subscriber.client_id, len(channels)))
        channels.add(channel)
        subscribers = self._subscribers_of.setdefault(channel, {})
        subscribers[subscriber] = None
        if self.watcher is not None:
            self.watcher.subscribed(subscriber, channel, len(subscribers) == 1)
        return True

    def unsubscribe(self, subscriber, channel):
        """True when it was subscribed."""
        channels = self._channels_of.get(subscriber)
        if channels is None or channel not in channels:
            return False
        channels.discard(channel)
        self._drop_subscription(subscriber, channel)
        return True

    def _drop_subscription(self, subscriber, channel):
        subscribers = self._subscribers_of[channel]
        del subscribers[subscriber]
        if not subscribers:
            del self._subscribers_of[channel]
        if self.watcher is not None:
            self.watcher.unsubscribed(subscriber, channel, not subscribers)

    def channels_of(self, subscriber):
        return frozenset(self._channels_of.get(subscriber, ()))

    # -- publishing -------------------------------------------------------

    def publish(self, publication):
        """Queue the publication for every subscriber of its channel; how many took it."""
        self.publications += 1
        subscribers = self._subscribers_of.get(publication.channel)
        if not subscribers:
            return 0
        delivered = 0
        # A copy: a subscriber that falls behind leaves every channel here and now.
        for subscriber in list(subscribers):
            if subscriber.deliver(publication):
                delivered += 1
            elif subscriber.fell_behind and subscriber.client_id in self._clients:
                self.subscribers_too_slow += 1
                self.remove_client(subscriber)
        self.deliveries += delivered
        return delivered

    # -- what the API reports ---------------------------------------------

    def channels(self, pattern=None):
        """{channel: number of subscribers}; `pattern` is a shell-style pattern (``chat:*``)."""
        return {channel: len(subscribers) for channel, subscribers in self._subscribers_of.items()
                if pattern is None or fnmatch.fnmatchcase(channel, pattern)}

    def presence(self, channel):
        """The subscribers of `channel`, in subscription order."""
        return list(self._subscribers_of.get(channel, ()))
