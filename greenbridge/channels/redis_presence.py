"""A node's presence entries and its ``info`` entry in Redis, written by one greenlet.

A subscription made or ended here is queued (``added``/``removed``: the
hub's watcher, which must not wait) and written by the writer greenlet,
in order, in pipelines. The queue is bounded: when Redis is slow and it is
full, an entry is dropped and counted; the next refresh heals it. Every
``--node-ttl / 3`` seconds (and when the pub/sub connection is back after
a loss) the writer writes all of this node's entries again with a new
expiry, and its ``greenbridge.nodes`` entry with its counts; entries of a
node that stops refreshing them (it died) expire after --node-ttl.

A new entry is written once its channel's subscription in Redis is confirmed
(or after the broker timeout): whoever sees a client in a channel's presence
can publish to it and reach it.
"""

import collections
import json
import logging
import time

import gevent
from gevent.event import Event
from redis.exceptions import RedisError

from greenbridge.channels import redis_keys as keys
from greenbridge.channels.broker import BrokerUnavailable, presence_entry

log = logging.getLogger("greenbridge.channels")

# Changes that may wait for Redis; past it they are dropped (the next refresh writes them).
MAX_QUEUED_CHANGES = 100000
# Subscriptions per pipeline: each pipeline is one round trip under the broker timeout.
_PER_PIPELINE = 1000


class PresenceWriter:
    def __init__(self, redis, hub, node, counts, node_ttl, timeout, health, wait_live):
        """`counts()` gives this node's numbers for ``info``; `health` hears of each
        success and failure; `wait_live(channel, timeout)` returns once the channel's Redis
        subscription is confirmed (BrokerUnavailable after `timeout`); a batch of new
        entries waits at most the broker `timeout` for all its channels."""
        self._redis = redis
        self._hub = hub
        self._node = node
        self._counts = counts
        self._node_ttl = node_ttl
        self._timeout = timeout
        self._health = health
        self._wait_live = wait_live
        self._queue = collections.deque()
        self._wake = Event()
        self._refresh_due = True
        self.dropped = 0
        self._greenlet = gevent.spawn(self._run)

    def added(self, subscriber, channel):
        self._put((True, channel, subscriber.client_id, json.dumps(presence_entry(subscriber))))

    def removed(self, subscriber, channel):
        self._put((False, channel, subscriber.client_id, None))

    def refresh_now(self):
        self._refresh_due = True
        self._wake.set()

    def _put(self, change):
        if len(self._queue) >= MAX_QUEUED_CHANGES:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("Redis too slow for presence: changes dropped (the next refresh, "
                            "within --node-ttl / 3, writes them again)")
            return
        self._queue.append(change)
        self._wake.set()

    # -- the writer greenlet ------------------------------------------------

    def _run(self):
        interval = self._node_ttl / 3.0
        next_refresh = 0.0
        while True:
            self._wake.wait(max(0.0, next_refresh - time.monotonic()))
            self._wake.clear()
            if self._refresh_due or time.monotonic() >= next_refresh:
                self._refresh_due = False
                next_refresh = time.monotonic() + interval
                self._write(self._all_subscriptions(), with_node=True)
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue),
                                                                   _PER_PIPELINE))]
                self._wait_until_live({change[1] for change in batch if change[0]})
                self._write(batch)

    def _all_subscriptions(self):
        return [(True, channel, subscriber.client_id, json.dumps(presence_entry(subscriber)))
                for channel in self._hub.channels() for subscriber in self._hub.presence(channel)]

    def _wait_until_live(self, channels):
        deadline = time.monotonic() + self._timeout
        try:
            for channel in channels:
                self._wait_live(channel, max(0.0, deadline - time.monotonic()))
        except BrokerUnavailable:
            pass  # written all the same (or failing): presence must not wait longer

    def _write(self, changes, with_node=False):
        expires = time.time() + self._node_ttl
        ttl = int(self._node_ttl) + 1
        try:
            for start in range(0, max(len(changes), 1), _PER_PIPELINE):
                pipe = self._redis.pipeline(transaction=False)
                for present, channel, client_id, entry in changes[start:start + _PER_PIPELINE]:
                    members, expiry = keys.presence_hash(channel), keys.presence_expiry(channel)
                    if present:
                        pipe.hset(members, client_id, entry)
                        pipe.zadd(expiry, {client_id: expires})
                        pipe.expire(members, ttl)
                        pipe.expire(expiry, ttl)
                    else:
                        pipe.hdel(members, client_id)
                        pipe.zrem(expiry, client_id)
                if with_node and start == 0:
                    entry = dict(self._node.entry(self._counts()), expires=expires)
                    pipe.hset(keys.NODES, self._node.uid, json.dumps(entry))
                pipe.execute()
        except RedisError as error:
            self._health.failed(error)
        else:
            self._health.succeeded()

    def close(self):
        """Write what is queued (within the broker timeout), remove this node's entry, stop."""
        self._greenlet.kill()
        with gevent.Timeout(self._timeout, False):
            if self._queue:
                self._write(list(self._queue))
            try:
                self._redis.hdel(keys.NODES, self._node.uid)
            except RedisError:
                pass  # it expires after --node-ttl
