"""The broker: what the server API (and later PHP publications) ask of "all the channels".

One small interface, so that nothing above it knows whether the channels live
in this process (``LocalBroker``), in the workers of one host, or on several
nodes. Presence entries are plain dicts in the API's shape
(``{"client", "user", "conn_info"}``).
"""

from greenbridge import endings


class LocalBroker:
    """The channels of this process: the hub itself."""

    def __init__(self, hub):
        self._hub = hub

    def publish(self, publication):
        self._hub.publish(publication)

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
        return [{"client": subscriber.client_id, "user": subscriber.user,
                 "conn_info": subscriber.conn_info} for subscriber in self._hub.presence(channel)]

    def channels(self, pattern=None):
        return self._hub.channels(pattern)

    def counts(self):
        """This node's numbers for ``info``."""
        channels = self._hub.channels()
        return {"num_clients": self._hub.num_clients, "num_users": self._hub.num_users,
                "num_channels": len(channels), "num_subs": sum(channels.values())}

    def _clients(self, user, client_id):
        if client_id is None:
            return self._hub.clients_of(user)
        subscriber = self._hub.client(client_id)
        return [subscriber] if subscriber is not None and subscriber.user == user else []
