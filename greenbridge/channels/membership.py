"""A connection's place in the hub, from its start to its teardown.

Every connection (PHP's and a subscribe route's) is one Subscriber of its
process's hub under its connection ID, subscribed at once to the channels of
its token. Its subscriptions end with it: the block that runs the connection
is the one that holds the membership (``member_of``).
"""

from contextlib import contextmanager

from greenbridge.channels.subscriber import Subscriber


@contextmanager
def member_of(hub, connection, websocket, token, queue_limit, envelope):
    """Hold `connection` (its ``id``, ``traffic``, ``request_close``) in `hub` for the block,
    subscribed to the channels of `token` (a ConnectionToken or None); yields its Subscriber.
    With `envelope`, publications reach it wrapped in {"channel": ..., "data": ...}."""
    traffic = connection.traffic

    def send_frames(data):
        websocket.send_frames(data)
        traffic.to_client += len(data)  # whole frames: what the access log's out= counts

    subscriber = Subscriber(connection.id, "" if token is None else token.user,
                            None if token is None else token.info, envelope, send_frames,
                            connection.request_close, queue_limit)
    hub.add_client(subscriber)
    try:
        for channel in () if token is None else token.channels:
            hub.subscribe(subscriber, channel)  # names and number checked with the token
        yield subscriber
    finally:
        hub.remove_client(subscriber)
