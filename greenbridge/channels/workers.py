"""Channels across the workers of one host (--workers N): the arbiter relays.

Each worker has a stream socket to the arbiter, made anew before each fork
(a worker that died mid-message cannot garble its successor's stream). A
publication made in a worker (by PHP) is delivered there at once and sent to
the arbiter, which passes it to every other worker; a publication from the
server API (served by the arbiter) goes to every worker. Each worker gets
one sender's publications in order. The API's questions (presence, channels,
counts) and its user actions (subscribe, unsubscribe, disconnect) go to
every worker; the answers are merged. A worker that does not answer within
_ANSWER_TIMEOUT is left out of that answer, with one log line.

Messages: a 4-byte length, a kind byte, then the body. A publication's body
is its channel's length (2 bytes), the channel, its kind (1 byte) and its
data; a question and an answer are JSON.
"""

import collections
import itertools
import json
import logging
import socket
import struct

import gevent
from gevent.event import AsyncResult

from greenbridge.channels.broker import LocalBroker
from greenbridge.channels.hub import SubscriptionError
from greenbridge.channels.node import Node
from greenbridge.channels.publication import KINDS, Publication

log = logging.getLogger("greenbridge.channels")

_HEADER = struct.Struct("!IB")
_CHANNEL_LENGTH = struct.Struct("!H")
_PUBLICATION, _QUESTION, _ANSWER = 1, 2, 3
_ANSWER_TIMEOUT = 2.0
# What one link may hold unsent before it is cut: a worker that stopped reading
# must not grow the arbiter without bound.
_MAX_UNSENT_BYTES = 256 * 1024 * 1024


def encode_publication(publication):
    channel = publication.channel.encode("ascii")
    body = b"".join((_CHANNEL_LENGTH.pack(len(channel)), channel,
                     bytes((KINDS.index(publication.kind),)), publication.data))
    return _HEADER.pack(len(body), _PUBLICATION) + body


def decode_publication(body):
    (length,) = _CHANNEL_LENGTH.unpack_from(body)
    channel = body[2:2 + length].decode("ascii")
    return Publication(channel, body[3 + length:], KINDS[body[2 + length]])


def _encode_json(kind, value):
    body = json.dumps(value).encode("utf-8")
    return _HEADER.pack(len(body), kind) + body


class _Link:
    """One end of an arbiter-worker socket: messages in, messages out through a queue."""

    def __init__(self, sock, on_message, name, max_message):
        self._socket = sock
        self._on_message = on_message
        self._name = name
        self._max_message = max_message
        self._unsent = collections.deque()
        self._unsent_bytes = 0
        self._writer = None
        self._reader = gevent.spawn(self._read)

    def send(self, message):
        if self._socket is None:
            return
        if self._unsent_bytes + len(message) > _MAX_UNSENT_BYTES:
            log.error("%s stopped reading (%d bytes unsent); cutting its channel link",
                      self._name, self._unsent_bytes)
            self.close()
            return
        self._unsent.append(message)
        self._unsent_bytes += len(message)
        if self._writer is None:
            self._writer = gevent.spawn(self._write)

    def _write(self):
        try:
            while self._unsent and self._socket is not None:
                message = self._unsent.popleft()
                self._unsent_bytes -= len(message)
                self._socket.sendall(message)
        except OSError as error:
            log.info("%s: channel link ended: %s", self._name, error)
        finally:
            self._writer = None

    def _read(self):
        reader = self._socket.makefile("rb")
        try:
            while True:
                header = reader.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return
                length, kind = _HEADER.unpack(header)
                if length > self._max_message:
                    log.error("%s sent a channel message of %d bytes; cutting its link",
                              self._name, length)
                    return
                body = reader.read(length)
                if len(body) < length:
                    return
                self._on_message(kind, body)
        except OSError:
            return
        finally:
            reader.close()

    def close(self):
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()
        self._unsent.clear()
        self._unsent_bytes = 0
        for greenlet in (self._writer, self._reader):
            if greenlet is not None and greenlet is not gevent.getcurrent():
                greenlet.kill(block=False)


class WorkerLinks:
    """The arbiter's side: one link per worker slot, and the broker the API uses."""

    keeps_history = False  # in-memory history lives in one process (settings/checks.py)

    def __init__(self, max_payload_size):
        self._max_message = max_payload_size + 4096
        self._pairs = {}  # worker number -> (arbiter end, worker end), until the fork
        self._links = {}  # worker number -> _Link in the arbiter
        self._question_numbers = itertools.count()
        self._waiting = {}  # question number -> AsyncResult
        self._node = Node()  # the workers of one host are one node

    # -- around each fork (workers.Arbiter) ----------------------------------

    def before_fork(self, number):
        old = self._links.pop(number, None)
        if old is not None:
            old.close()
        self._pairs[number] = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def in_arbiter(self, number):
        arbiter_end, worker_end = self._pairs.pop(number)
        worker_end.close()
        self._links[number] = _Link(arbiter_end, lambda kind, body: self._received(number, kind, body),
                                    "worker %d" % number, self._max_message)

    def in_worker(self, number, hub):
        """In the forked worker: its link to the arbiter, serving `hub`; the broker PHP uses."""
        arbiter_end, worker_end = self._pairs.pop(number)
        arbiter_end.close()
        for link in self._links.values():  # the arbiter's, inherited through the fork
            link.close()
        self._links.clear()
        return WorkerSideBroker(hub, worker_end, self._max_message)

    # -- the arbiter relays -------------------------------------------------

    def _received(self, number, kind, body):
        if kind == _PUBLICATION:
            message = _HEADER.pack(len(body), _PUBLICATION) + body
            for other, link in list(self._links.items()):
                if other != number:
                    link.send(message)
        elif kind == _ANSWER:
            answer = json.loads(body)
            waiting = self._waiting.get(answer["id"])
            if waiting is not None:
                waiting.set(answer)

    # -- the broker the server API uses, in the arbiter ----------------------

    def publish(self, publication):
        message = encode_publication(publication)
        for link in list(self._links.values()):
            link.send(message)

    def subscribe(self, user, channel, client_id=None):
        for answer in self._ask_all("subscribe", user, channel, client_id):
            if "error" in answer:
                raise SubscriptionError(answer["error"])

    def unsubscribe(self, user, channel, client_id=None):
        self._ask_all("unsubscribe", user, channel, client_id)

    def disconnect(self, user, client_id, keep, code, reason):
        self._ask_all("disconnect", user, client_id, sorted(keep), code, reason)

    def presence(self, channel):
        return [entry for answer in self._ask_all("presence", channel)
                for entry in answer["result"]]

    def channels(self, pattern=None):
        merged = {}
        for answer in self._ask_all("channels", pattern):
            for channel, count in answer["result"].items():
                merged[channel] = merged.get(channel, 0) + count
        return merged

    def nodes(self):
        return [self._node.entry(self.counts())]

    def not_ready_because(self):
        return None

    def counts(self):
        answers = self._ask_all("counts")
        totals = {name: sum(answer["result"][name] for answer in answers)
                  for name in ("num_clients", "num_users", "num_subs")}
        totals["num_channels"] = len(self.channels())
        # A user connected to two workers counts twice here: users are not shared.
        return totals

    def _ask_all(self, operation, *arguments):
        """Every worker's answer {"result": ...} or {"error": ...}, within _ANSWER_TIMEOUT."""
        asked = {}  # question number -> worker number
        for number, link in list(self._links.items()):
            question = next(self._question_numbers)
            asked[question] = number
            self._waiting[question] = AsyncResult()
            link.send(_encode_json(_QUESTION, {"id": question, "op": operation,
                                               "args": arguments}))
        answers = []
        with gevent.Timeout(_ANSWER_TIMEOUT, False):
            for question in asked:
                answers.append(self._waiting[question].get())
        for question, number in asked.items():
            if not self._waiting.pop(question).ready():
                log.warning("worker %d did not answer the API's %s within %gs", number,
                            operation, _ANSWER_TIMEOUT)
        return answers


class WorkerSideBroker(LocalBroker):
    """In a worker: its own hub, plus the link that shares publications with the others."""

    def __init__(self, hub, sock, max_message):
        super().__init__(hub)
        self._link = _Link(sock, self._received, "the arbiter", max_message)

    def publish(self, publication):
        super().publish(publication)
        self._link.send(encode_publication(publication))

    def close(self):
        self._link.close()

    def _received(self, kind, body):
        if kind == _PUBLICATION:
            super().publish(decode_publication(body))
        elif kind == _QUESTION:
            question = json.loads(body)
            self._link.send(_encode_json(_ANSWER, self._answer(question)))

    def _answer(self, question):
        operation, arguments = question["op"], question["args"]
        try:
            if operation == "presence":
                result = super().presence(*arguments)
            elif operation == "channels":
                result = super().channels(*arguments)
            elif operation == "counts":
                result = super().counts()
            elif operation == "subscribe":
                result = super().subscribe(*arguments)
            elif operation == "unsubscribe":
                result = super().unsubscribe(*arguments)
            elif operation == "disconnect":
                user, client_id, keep, code, reason = arguments
                result = super().disconnect(user, client_id, frozenset(keep), code, reason)
            else:
                return {"id": question["id"], "error": "unknown operation %r" % operation}
        except SubscriptionError as error:
            return {"id": question["id"], "error": str(error)}
        return {"id": question["id"], "result": result}
