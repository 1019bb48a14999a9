"""How a connection ends: one value, made from what happened; the first cause wins.

An ``Ending`` is the close code and reason the client gets (1006: it left
first and gets none), that the access log and the metrics show, and who ended
the connection (``By``). Every code and reason a bridged connection can end
with is made here, by the name of what happened.

Two parts learn what happened, and the first cause recorded wins:

- the client's WebSocket (websocket.py) records what the client did when it
  happens: its close frame, a protocol error or a limit it broke, leaving
  without a close frame. From then on it sends nothing more;
- the connection (connection.py) decides once from what else happened (PHP
  ended, closed or broke its message mode, a timeout, a missed pong, the
  server shutting down) and carries it out in one teardown, which closes the
  WebSocket with it. What the client did before the teardown stays the
  ending: it came first, and its close handshake is already done.
"""

import enum
from typing import NamedTuple

from greenbridge.frames import CloseCode
from greenbridge.modes import PhpProtocolError
from greenbridge.protocol import CloseReceived


class By(enum.Enum):
    """Who ended a connection."""

    CLIENT = "client"  # its close frame, or it left
    PHP = "php"  # PHP closed its socket, exited, sent a close frame or broke its message mode
    SERVER = "server"  # a rule of ours: a limit, a timeout, a missed pong, a protocol error
    SHUTDOWN = "shutdown"  # the server is stopping


class Ending(NamedTuple):
    """How a connection ended: the close code and reason, and who ended it."""

    code: int
    reason: str
    by: By


def first(recorded, happened):
    """The ending once `happened` happened: the one recorded before it, if any."""
    return happened if recorded is None else recorded


# -- the client ---------------------------------------------------------------

def client_closed(code, reason):
    """The client's close frame (code 1005: it gave none)."""
    return Ending(code, reason or "client closed", By.CLIENT)


# The client's TCP connection ended (or a read failed) without a close frame.
CLIENT_LEFT = Ending(CloseCode.ABNORMAL, "client disconnected without close frame", By.CLIENT)
# A send to the client failed.
CLIENT_UNREACHABLE = Ending(CloseCode.ABNORMAL, "client disconnected", By.CLIENT)


def protocol_failure(code, reason):
    """The client broke the protocol or a limit (the core's ProtocolFailure)."""
    return Ending(code, reason, By.SERVER)


def from_client(event):
    """The ending for the core's close event: CloseReceived or ProtocolFailure."""
    if type(event) is CloseReceived:
        return client_closed(event.code, event.reason)
    return protocol_failure(event.code, event.reason)


def message_too_slow(seconds):
    """A fragmented message not complete within --message-timeout."""
    return protocol_failure(CloseCode.POLICY_VIOLATION, "message not complete within %gs" % seconds)


def no_pong(seconds):
    """The client did not answer the heartbeat's ping within --ping-timeout."""
    return Ending(CloseCode.GOING_AWAY, "no pong within %gs" % seconds, By.SERVER)


# -- PHP ----------------------------------------------------------------------

def php_ended(failure=None):
    """PHP closed its socket; `failure` describes a non-zero exit ("exit status 3")."""
    if failure:
        return Ending(CloseCode.INTERNAL_ERROR, "PHP %s" % failure, By.PHP)
    return Ending(CloseCode.NORMAL, "PHP closed the connection", By.PHP)


def from_php(event):
    """The ending for a message decoder's end event: PHP's Close, or a PhpProtocolError."""
    if isinstance(event, PhpProtocolError):
        return Ending(event.code, event.client_reason, By.PHP)
    return Ending(event.code, event.reason, By.PHP)


PHP_NOT_CONNECTED = Ending(CloseCode.INTERNAL_ERROR, "PHP did not connect back", By.PHP)


# -- the server ---------------------------------------------------------------

def php_timeout(seconds):
    return Ending(CloseCode.GOING_AWAY, "PHP timeout (%gs) reached" % seconds, By.SERVER)


def idle_timeout(seconds):
    return Ending(CloseCode.GOING_AWAY, "connection timeout (%gs idle) reached" % seconds,
                  By.SERVER)


def refused(code, reason):
    """An upgrade refused after its 101 answer (under gevent-websocket's stock handler)."""
    return Ending(code, reason, By.SERVER)


SHUTDOWN = Ending(CloseCode.GOING_AWAY, "server shutting down", By.SHUTDOWN)


# -- channels -----------------------------------------------------------------

# A subscriber that fell --subscriber-queue-size bytes behind the publications.
SUBSCRIBER_TOO_SLOW = Ending(CloseCode.POLICY_VIOLATION, "subscriber too slow", By.SERVER)
# A data message on a --subscribe-route.
RECEIVE_ONLY = Ending(CloseCode.UNSUPPORTED_DATA, "this route only receives", By.SERVER)


def disconnected(code, reason):
    """The server API's disconnect, with the code and reason it asked for."""
    return Ending(code, reason, By.SERVER)
# The connection's own code failed (a bug): before the bridge, or in a pump.
INTERNAL_ERROR = Ending(CloseCode.INTERNAL_ERROR, "internal error", By.SERVER)
BRIDGE_ERROR = Ending(CloseCode.INTERNAL_ERROR, "bridge error", By.SERVER)
