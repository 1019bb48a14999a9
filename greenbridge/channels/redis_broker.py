"""The broker across nodes (--broker redis://...): every node's channels over one Redis.

A node (a process that holds subscribers: the server, or each worker of
--workers) subscribes in Redis to the channels it has subscribers for
(redis_subscriptions.py) and writes its presence and ``info`` entry with a
TTL it refreshes (redis_presence.py). Every publication goes through Redis,
also to the publishing node's own subscribers: one order for everyone, and a
publication nobody could receive fails (BrokerUnavailable) instead of
reaching only this node. Publishing is one Lua script that also keeps the
channel's history (a stream) when --history-size is set (redis_keys.py);
publications made at once share a pipeline (redis_publisher.py).
The server API's actions on a user's connections are published on the
control channel; every node carries them out on its own hub.

The arbiter of --workers uses a RedisBroker without a hub: it publishes and
reads for the server API, holds no subscriber and is no node.

Every Redis call has the broker timeout (connect and read); a failure is
BrokerUnavailable with one line. Losing Redis and getting it back are one
log line each; /readyz says "broker unavailable: ..." meanwhile.
"""

import fnmatch
import json
import logging
import secrets
import time

import redis
from gevent.event import Event
from redis.exceptions import RedisError

from greenbridge.channels import redis_keys as keys
from greenbridge.channels.broker import (META_TTL, BrokerUnavailable, HistoryPage, LocalBroker,
                                         StreamPosition, UnrecoverablePosition, new_epoch)
from greenbridge.channels.hub import SubscriptionError
from greenbridge.channels.node import Node
from greenbridge.channels.redis_presence import PresenceWriter
from greenbridge.channels.redis_publisher import RedisPublisher
from greenbridge.channels.redis_subscriptions import RedisSubscriptions, one_line
from greenbridge.logs import RateLimitedLog
from greenbridge.settings.channels import redacted_broker_url

log = logging.getLogger("greenbridge.channels")

# Connections to Redis for commands, per process: a slow Redis cannot make the node
# open one per waiting API request.
MAX_CONNECTIONS = 64


def redis_broker(config, hub):
    """The RedisBroker of this process for the settings (`hub` None: the arbiter's)."""
    return RedisBroker(config.broker, config.broker_timeout, config.node_ttl, hub,
                       history_size=config.history_size, history_ttl=config.history_ttl)


class RedisHealth:
    """Whether Redis answers, as the last call found; a change is one log line."""

    def __init__(self, name):
        self._name = name
        self.because = None  # why the last call failed; None when it succeeded

    def failed(self, error):
        why = one_line(error)
        if self.because is None:
            log.warning("broker %s unavailable: %s; publications fail until it is back",
                        self._name, why)
        self.because = why

    def succeeded(self):
        if self.because is not None:
            self.because = None
            log.info("broker %s is back", self._name)


class RedisBroker:
    def __init__(self, url, timeout, node_ttl, hub=None, history_size=0, history_ttl=0,
                 node=None):
        self._timeout = timeout
        self._history_size = history_size
        # Milliseconds for PEXPIRE: --history-ttl takes fractions of a second too.
        self._history_ttl_ms = int(history_ttl * 1000)
        self._health = RedisHealth(redacted_broker_url(url))
        # No retries inside redis-py: a call fails within the timeout, and the caller says so.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=None,
            protocol=2, max_connections=MAX_CONNECTIONS)
        pool = self._redis.connection_pool
        self._publisher = RedisPublisher(
            lambda: pool.connection_class(**pool.connection_kwargs),
            self._redis.register_script(keys.PUBLISH))
        self._history_script = self._redis.register_script(keys.HISTORY)
        self._presence_script = self._redis.register_script(keys.PRESENCE)
        self._local = self._subscriptions = self._presence = None
        self._syncs = {}  # sync marker -> Event, set when the marker arrives (history)
        if hub is not None:
            self._node = node or Node()
            self._local = LocalBroker(hub, self._node)
            self._deliver = hub.publish
            self._subscriptions = RedisSubscriptions(
                lambda: pool.connection_class(**pool.connection_kwargs), keys.CONTROL, timeout,
                self._received, self._control, self._up, self._health.failed)
            self._presence = PresenceWriter(
                self._redis, hub, self._node, self._local.counts, node_ttl, timeout,
                self._health, lambda channel, within: self._subscriptions.live(
                    keys.pubsub_channel(channel), within))
            self._log_bad_message = RateLimitedLog(log, logging.WARNING)
            hub.watcher = self

    # -- calls to Redis -----------------------------------------------------

    def _call(self, function, *args, **kwargs):
        try:
            result = function(*args, **kwargs)
        except RedisError as error:
            self._health.failed(error)
            raise BrokerUnavailable("broker unavailable: %s" % one_line(error)) from None
        self._health.succeeded()
        return result

    @property
    def keeps_history(self):
        return self._history_size > 0

    # -- publishing -----------------------------------------------------------

    @staticmethod
    def _keys_of(channel):
        """The keys the Lua scripts take (redis_keys.PUBLISH, HISTORY)."""
        return [keys.pubsub_channel(channel), keys.history_stream(channel),
                keys.history_meta(channel)]

    def publish(self, publication):
        channel = publication.channel
        offset, epoch = self._call(
            self._publisher.publish, self._keys_of(channel),
            [keys.kind_and_data(publication), self._history_size, self._history_ttl_ms,
             META_TTL, new_epoch()])
        if not self._history_size:
            return None
        return StreamPosition(int(offset), epoch.decode())

    def _received(self, channel, payload):
        """A publication from Redis (the reader greenlet): to this node's subscribers."""
        if payload.startswith(keys.SYNC):
            arrived = self._syncs.get(payload)
            if arrived is not None:
                arrived.set()
            return
        try:
            publication = keys.decode_message(channel, payload)
        except (ValueError, IndexError):
            self._log_bad_message("a malformed publication of %d bytes on Redis channel %s "
                                  "dropped (not greenbridge's?)", len(payload), channel)
            return
        self._deliver(publication)

    def live(self, channel):
        """Return once publications to `channel` reach this node's hub."""
        self._subscriptions.live(keys.pubsub_channel(channel), self._timeout)

    # -- the hub's watcher (never waits) ----------------------------------------

    def subscribed(self, subscriber, channel, first):
        if first:
            self._subscriptions.want(keys.pubsub_channel(channel), channel)
        self._presence.added(subscriber, channel)

    def unsubscribed(self, subscriber, channel, last):
        if last:
            self._subscriptions.drop(keys.pubsub_channel(channel))
        self._presence.removed(subscriber, channel)

    def _up(self):
        self._health.succeeded()
        self._presence.refresh_now()  # what was written while Redis was away may be lost

    # -- a user's connections, on every node ----------------------------------------

    def subscribe(self, user, channel, client_id=None):
        self._command("subscribe", user, channel, client_id)

    def unsubscribe(self, user, channel, client_id=None):
        self._command("unsubscribe", user, channel, client_id)

    def disconnect(self, user, client_id, keep, code, reason):
        self._command("disconnect", user, client_id, sorted(keep), code, reason)

    def _command(self, operation, *arguments):
        self._call(self._redis.publish, keys.CONTROL,
                   json.dumps({"op": operation, "args": arguments}))

    def _control(self, payload):
        """A command from the control channel (the reader greenlet), carried out here."""
        try:
            command = json.loads(payload)
            operation, arguments = command["op"], command["args"]
            if operation == "subscribe":
                self._local.subscribe(*arguments)
            elif operation == "unsubscribe":
                self._local.unsubscribe(*arguments)
            elif operation == "disconnect":
                user, client_id, keep, code, reason = arguments
                self._local.disconnect(user, client_id, frozenset(keep), code, reason)
            else:
                raise ValueError(operation)
        except SubscriptionError as error:
            log.info("API subscribe refused on this node: %s", error)
        except (ValueError, TypeError, KeyError) as error:
            self._log_bad_message("a malformed command on Redis channel %s dropped: %s",
                                  keys.CONTROL.decode(), one_line(error))

    # -- what is there, across nodes -------------------------------------------------

    def presence(self, channel):
        flat = self._call(self._presence_script,
                          keys=[keys.presence_hash(channel), keys.presence_expiry(channel)],
                          args=[time.time()])
        return [json.loads(entry) for entry in flat[1::2]]

    def channels(self, pattern=None):
        names = [key.decode()[len(keys.PRESENCE_PREFIX):] for key in self._call(
            lambda: list(self._redis.scan_iter(match=keys.PRESENCE_PATTERN, count=1000)))]
        if pattern is not None:
            names = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        pipe = self._redis.pipeline(transaction=False)
        now = time.time()
        for name in names:
            pipe.zcount(keys.presence_expiry(name), now, "+inf")
        counts = self._call(pipe.execute)
        return {name: count for name, count in zip(names, counts) if count}

    def nodes(self):
        """``info``'s entries: every live node's (this node's with its counts of now)."""
        now = time.time()
        entries, expired = [], []
        for uid, text in self._call(self._redis.hgetall, keys.NODES).items():
            entry = json.loads(text)
            if entry.pop("expires") < now:
                expired.append(uid)
            elif self._local is None or entry["uid"] != self._node.uid:
                entries.append(entry)
        if expired:
            self._call(self._redis.hdel, keys.NODES, *expired)
        if self._local is not None:
            entries.extend(self._local.nodes())
        return sorted(entries, key=lambda entry: entry["name"])

    # -- history --------------------------------------------------------------------

    def history(self, channel, limit=0, since=None, reverse=False):
        """The last publications of `channel` (Centrifugo's semantics): `limit` 0 only
        the position, -1 all, N at most N; after `since` (a StreamPosition; in reverse:
        before it); UnrecoverablePosition when `since` is of another epoch.

        When this node has subscribers of `channel`, it returns once every publication up
        to the page's position has reached the hub: a recovery (recovery.py) that holds
        the live ones aside and then reads the history gets none twice, none lost."""
        direction = "none" if limit == 0 else "reverse" if reverse else "forward"
        if since is not None:
            first = "(%d-0" % since.offset
        else:
            first = "+" if reverse else "-"
        marker = b""
        if self._subscriptions is not None and \
                self._subscriptions.wants(keys.pubsub_channel(channel)):
            marker = keys.SYNC + secrets.token_hex(8).encode()
            arrived = self._syncs[marker] = Event()
        try:
            top, epoch, entries = self._call(
                self._history_script, keys=self._keys_of(channel),
                args=[META_TTL, direction, first, limit, new_epoch(), marker])
            if marker and not arrived.wait(self._timeout):
                raise BrokerUnavailable("broker unavailable: the publications of a history "
                                        "read did not reach this node within %gs"
                                        % self._timeout)
        finally:
            self._syncs.pop(marker, None)
        epoch = epoch.decode()
        if since is not None and since.epoch != epoch:
            raise UnrecoverablePosition("position %d of epoch %r: the channel's epoch is now "
                                        "%r" % (since.offset, since.epoch, epoch))
        return HistoryPage([keys.decode_entry(channel, epoch, entry) for entry in entries],
                           StreamPosition(top, epoch))

    def history_remove(self, channel):
        self._call(self._redis.delete, keys.history_stream(channel))

    # -- readiness and the end -------------------------------------------------------

    def not_ready_because(self):
        if self._subscriptions is None:  # the arbiter's: no connection held, ask
            try:
                self._call(self._redis.ping)
            except BrokerUnavailable as error:
                return str(error)
            return None
        because = self._subscriptions.down_because or self._health.because
        return None if because is None else "broker unavailable: %s" % because

    def close(self):
        if self._subscriptions is not None:
            self._subscriptions.close()
            self._presence.close()
        self._publisher.close()
        self._redis.close()
