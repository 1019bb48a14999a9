"""A connection's place in the hub, from its start to its teardown.

Every connection (PHP's and a subscribe route's) is one Subscriber of its
process's hub under its connection ID, subscribed at once to the channels of
its token. Its subscriptions end with it: the block that runs the connection
is the one that holds the membership (``member_of``).
"""

from contextlib import contextmanager

from greenbridge.channels.subscriber import Subscriber


@contextmanager
def member_of(hub, connection, websocket, token, queue_limit):
    """Hold `connection` (its ``id``, ``traffic``, ``request_close``) in `hub` for the block,
    subscribed to the channels of `token` (a ConnectionToken or None); yields its Subscriber."""
    subscriber = Subscriber(connection.id, "" if token is None else token.user,
                            None if token is None else token.info, False,
                            _Outlet(websocket, connection.traffic), connection.request_close,
                            queue_limit)
    hub.add_client(subscriber)
    try:
        for channel in () if token is None else token.channels:
            hub.subscribe(subscriber, channel)  # names and number checked with the token
        yield subscriber
    finally:
        hub.remove_client(subscriber)


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
