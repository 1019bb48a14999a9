"""Publications to Redis, pipelined on one connection of their own.

Every greenlet that publishes waits for its own answer, but they share one
connection: whatever was queued while the last batch was out goes as one
pipeline (one write, one read of all the answers). A publication then costs
none of the connection pool's checks (a poll of the socket per command), and
publishers that publish at once share round trips.

A batch that fails (Redis down, or slower than the broker timeout, which is
the connection's) fails each of its publications with that error, and the
next batch makes the connection anew. A Redis that restarted has lost the
script: the batch loads it and runs again what it refused.
"""

import collections

import gevent
from gevent.event import AsyncResult
from redis.exceptions import NoScriptError, RedisError, ResponseError

# Publications in one pipeline at most: one slow batch cannot hold the rest long.
_MAX_BATCH = 256


class RedisPublisher:
    """`new_connection()` makes a redis-py Connection; `script` is the registered publish
    script (redis-py's Script: its ``sha`` and ``script``)."""

    def __init__(self, new_connection, script):
        self._new_connection = new_connection
        self._script = script
        self._connection = None
        self._queue = collections.deque()  # (keys, arguments, AsyncResult)
        self._sender = None

    def publish(self, keys, arguments):
        """The script's answer for one publication; RedisError when Redis did not take it."""
        answer = AsyncResult()
        self._queue.append((keys, arguments, answer))
        if self._sender is None:
            self._sender = gevent.spawn(self._send_queued)
        return answer.get()

    def close(self):
        if self._sender is not None:
            self._sender.kill(block=False)
        self._drop_connection()

    def _send_queued(self):
        try:
            while self._queue:
                batch = [self._queue.popleft()
                         for _ in range(min(len(self._queue), _MAX_BATCH))]
                try:
                    replies = self._run(batch)
                except RedisError as error:
                    self._drop_connection()
                    for _keys, _arguments, answer in batch:
                        answer.set_exception(error)
                    continue
                for (_keys, _arguments, answer), reply in zip(batch, replies):
                    if isinstance(reply, RedisError):
                        answer.set_exception(reply)
                    else:
                        answer.set(reply)
        finally:
            self._sender = None

    def _run(self, batch):
        """Each publication's reply (a RedisError for one Redis refused), in order."""
        replies = self._pipeline(batch)
        refused = [index for index, reply in enumerate(replies)
                   if isinstance(reply, NoScriptError)]
        if refused:  # nothing of those ran: load the script, run them again
            self._connection.send_command("SCRIPT", "LOAD", self._script.script)
            self._connection.read_response()
            for index, reply in zip(refused, self._pipeline([batch[i] for i in refused])):
                replies[index] = reply
        return replies

    def _pipeline(self, batch):
        connection = self._connection
        if connection is None:
            connection = self._connection = self._new_connection()
        connection.send_packed_command(connection.pack_commands(
            [("EVALSHA", self._script.sha, len(keys)) + tuple(keys) + tuple(arguments)
             for keys, arguments, _answer in batch]))
        replies = []
        for _ in batch:
            try:
                replies.append(connection.read_response())
            except ResponseError as refusal:  # this one only; the others' replies follow
                replies.append(refusal)
        return replies

    def _drop_connection(self):
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.disconnect()
