"""A connection's place in the hub, from its start to its teardown.

Every connection (PHP's and a subscribe route's) is one Subscriber of its
process's hub under its connection ID, subscribed at once to the channels of
its token. Its subscriptions end with it: the block that runs the connection
is the one that holds the membership (``with member_of(...)``).
"""

from greenbridge.channels.subscriber import Subscriber


def member_of(hub, connection, websocket, token, queue_limit, envelope, recovered=()):
    """Hold `connection` (its ``id``, ``traffic``, ``request_close``) in `hub` for a ``with``
    block, subscribed to the channels of `token` (a ConnectionToken or None) but those in
    `recovered` (recovery.py subscribes them); the block gets its Subscriber. With
    `envelope`, publications reach it wrapped in {"channel": ..., "data": ...}."""
    subscriber = Subscriber(connection.id, "" if token is None else token.user,
                            None if token is None else token.info, envelope,
                            _Outlet(websocket, connection.traffic), connection.request_close,
                            queue_limit)
    channels = () if token is None else token.channels
    if recovered:
        channels = [channel for channel in channels if channel not in recovered]
    return _Membership(hub, subscriber, channels)


class _Membership:
    # Not a @contextmanager: its generator and frame would stay with every idle connection.
    __slots__ = ("_hub", "_subscriber", "_channels")

    def __init__(self, hub, subscriber, channels):
        self._hub = hub
        self._subscriber = subscriber
        self._channels = channels

    def __enter__(self):
        self._hub.add_client(self._subscriber)
        try:
            for channel in self._channels:
                self._hub.subscribe(self._subscriber, channel)  # checked with the token
        except BaseException:
            self._hub.remove_client(self._subscriber)
            raise
        return self._subscriber

    def __exit__(self, *exc_info):
        self._hub.remove_client(self._subscriber)


class _Outlet:
    """The client's websocket as its Subscriber writes to it; what went is counted in the
    connection's traffic (whole frames: what the access log's out= counts)."""

    __slots__ = ("_websocket", "_traffic")

    def __init__(self, websocket, traffic):
        self._websocket = websocket
        self._traffic = traffic

    def send_frames(self, data):
        self._websocket.send_frames(data)
        self._traffic.to_client += len(data)

    def send_frames_now(self, data):
        sent = self._websocket.send_frames_now(data)
        self._traffic.to_client += sent
        return sent

    def send_rest(self, data):
        self._websocket.send_rest(data)
        self._traffic.to_client += len(data)
