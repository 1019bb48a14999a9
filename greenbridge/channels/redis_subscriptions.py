"""A node's pub/sub connection to Redis: the channels it has subscribers for, and control.

The node subscribes in Redis to a channel when the channel gets its first
subscriber here and unsubscribes when it loses its last one (the hub's
watcher calls ``want``/``drop``), so a node receives only the channels it
has subscribers for, plus the control channel.

One greenlet reads the connection and hands each message on as it comes
(``on_publication(channel, payload)``, ``on_control(payload)``); another
sends the SUBSCRIBE and UNSUBSCRIBE commands that bring Redis to what the
node wants, and PINGs. Two senders on one socket could interleave their
bytes, and the hub's watcher must not wait, hence the one sender.

redis-py's PubSub is not used: it retries and resubscribes by itself inside
its calls (the node must know when the connection was lost, to rewrite its
presence and to tell /readyz), and tracks subscriptions in dicts changed by
whichever greenlet calls it. A plain redis-py Connection (send, can_read,
read_response: its public methods) on RESP2 carries pub/sub as plain
replies.

When the connection is lost, the reader reconnects after a backoff (0.1 s
doubling to 1 s) and subscribes again to everything wanted. A connection
that goes silent is PINGed; no answer within the broker timeout counts as lost.
"""

import logging
import time

import gevent
from gevent.event import Event
from redis.exceptions import RedisError

from greenbridge.channels.broker import BrokerUnavailable

log = logging.getLogger("greenbridge.channels")

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 1.0
# Silence on the connection for this long is checked with a PING.
PING_INTERVAL = 5.0
# Channels per SUBSCRIBE or UNSUBSCRIBE command.
_CHANNELS_PER_COMMAND = 1000
NOT_CONNECTED_YET = "not connected yet"


class _Session:
    """What was sent on one connection: gone with it, so a sender still busy with an old
    connection cannot count its commands against a new one."""

    __slots__ = ("connection", "sent", "unconfirmed", "ping_sent", "up")

    def __init__(self, connection):
        self.connection = connection
        self.sent = set()  # pub/sub channels SUBSCRIBE was sent for
        self.unconfirmed = {}  # pub/sub channel -> commands sent and not yet answered
        self.ping_sent = False
        self.up = False  # subscribed to the control channel: the node hears the cluster


class RedisSubscriptions:
    def __init__(self, new_connection, control_channel, timeout, on_publication, on_control,
                 on_up, on_down):
        """`new_connection()` makes an unconnected redis-py Connection (RESP2); `on_up()` is
        called (in the reader: it must not wait) once subscribed to `control_channel` after
        a connect, `on_down(why)` when the connection is lost."""
        self._new_connection = new_connection
        self._timeout = timeout
        self._on_publication = on_publication
        self._on_control = on_control
        self._on_up = on_up
        self._on_down = on_down
        self._control_channel = control_channel
        # Pub/sub channel -> the channel's name (None: control): what this node listens to.
        self._wanted = {control_channel: None}
        self._backoff = _BACKOFF_FIRST
        self._session = None
        self._changed = Event()
        self._confirmed = Event()  # set and replaced at each confirmation
        self.down_because = NOT_CONNECTED_YET  # None while connected
        self._reader = gevent.spawn(self._read_forever)
        self._sender = gevent.spawn(self._send_forever)

    # -- what the node wants (the hub's watcher; never waits) ---------------

    def want(self, pubsub_channel, channel):
        self._wanted[pubsub_channel] = channel
        self._changed.set()

    def drop(self, pubsub_channel):
        self._wanted.pop(pubsub_channel, None)
        self._changed.set()

    def wants(self, pubsub_channel):
        return pubsub_channel in self._wanted

    def live(self, pubsub_channel, timeout):
        """Return once Redis confirmed this node's subscription to `pubsub_channel`
        (with no command for it still unanswered); BrokerUnavailable after `timeout`."""
        deadline = time.monotonic() + timeout
        while not self._is_live(pubsub_channel):
            confirmed = self._confirmed
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not confirmed.wait(remaining):
                raise BrokerUnavailable("broker unavailable: no subscription to %s within %gs"
                                        % (pubsub_channel.decode(), timeout))

    def _is_live(self, pubsub_channel):
        session = self._session
        return (session is not None and pubsub_channel in self._wanted
                and pubsub_channel in session.sent
                and not session.unconfirmed.get(pubsub_channel))

    def close(self):
        gevent.killall([self._reader, self._sender], block=False)
        session, self._session = self._session, None
        if session is not None:
            session.connection.disconnect()

    # -- the reader ----------------------------------------------------------

    def _read_forever(self):
        while True:
            connection = self._new_connection()
            try:
                connection.connect()
                session = self._session = _Session(connection)
                self._changed.set()  # the sender subscribes to everything wanted
                self._read(session)
            except (RedisError, OSError, BrokerUnavailable) as error:
                why = one_line(error)
            finally:
                self._session = None
                connection.disconnect()
            if self.down_because in (None, NOT_CONNECTED_YET):
                self._on_down(why)
            self.down_because = why
            gevent.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX)

    def _confirmation(self, session, pubsub_channel):
        count = session.unconfirmed.get(pubsub_channel, 0) - 1
        if count > 0:
            session.unconfirmed[pubsub_channel] = count
        else:
            session.unconfirmed.pop(pubsub_channel, None)
        self._confirmed.set()
        self._confirmed = Event()
        if not session.up and self._is_live(self._control_channel):
            session.up = True
            self.down_because = None
            self._backoff = _BACKOFF_FIRST
            self._on_up()

    def _read(self, session):
        connection = session.connection
        while True:
            if not connection.can_read(timeout=self._timeout if session.ping_sent
                                       else PING_INTERVAL):
                if session.ping_sent:
                    raise BrokerUnavailable("no answer to a PING within %gs" % self._timeout)
                session.ping_sent = True
                self._changed.set()
                continue
            reply = connection.read_response()
            kind = reply[0]
            if kind == b"message":
                channel = self._wanted.get(reply[1], False)
                if channel is None:
                    self._on_control(reply[2])
                elif channel:  # else no subscriber here any more
                    self._on_publication(channel, reply[2])
            elif kind in (b"subscribe", b"unsubscribe"):
                self._confirmation(session, reply[1])
            elif kind == b"pong":
                session.ping_sent = False

    # -- the sender ----------------------------------------------------------

    def _send_forever(self):
        while True:
            self._changed.wait()
            self._changed.clear()
            session = self._session
            if session is not None:
                self._send_changes(session)

    def _send_changes(self, session):
        wanted = set(self._wanted)
        commands = [("SUBSCRIBE",) + chunk for chunk in _chunks(wanted - session.sent)]
        commands += [("UNSUBSCRIBE",) + chunk for chunk in _chunks(session.sent - wanted)]
        for command in commands:
            for pubsub_channel in command[1:]:
                session.unconfirmed[pubsub_channel] = session.unconfirmed.get(pubsub_channel,
                                                                              0) + 1
        session.sent = wanted
        if session.ping_sent:
            commands.append(("PING",))
        if not commands:
            return
        connection = session.connection
        try:
            connection.send_packed_command(connection.pack_commands(commands),
                                           check_health=False)
        except (RedisError, OSError):
            connection.disconnect()  # the reader sees it and connects again


def _chunks(channels):
    channels = sorted(channels)
    return [tuple(channels[start:start + _CHANNELS_PER_COMMAND])
            for start in range(0, len(channels), _CHANNELS_PER_COMMAND)]


def one_line(error):
    return " ".join(str(error).split()) or type(error).__name__
