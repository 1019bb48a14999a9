"""A connection on a ``--subscribe-route``: it only receives publications, and runs no PHP.

Its token was verified at the upgrade; the hub delivers its publications
(channels/membership.py holds it there). What it costs is the bridge's
memory only: no process, no back-connection, no pumps. The connection's own
greenlet waits on the client (which answers pings and sends the close), and
nothing else waits for it:

- a data message from the client ends it with 1003, logged once;
- the client's close, a vanished client and the heartbeat end it as they end
  any connection;
- a request to end it (the server shutting down, a subscriber too slow) is
  raised into that wait as ``_EndRequested``, at once: it comes from other
  greenlets, and a client that says nothing would otherwise be waited on for ever.
"""

import logging
import time
import uuid

import gevent

from greenbridge import endings, pump
from greenbridge.connection import log_access
from greenbridge.logs import connection_fields

log = logging.getLogger("greenbridge.subscribe_route")


class _EndRequested(Exception):
    """Thrown into the connection's greenlet while it waits on the client."""


class _NoPhp:
    """pump.Heartbeat takes PHP busy writing a message as the client's sign of life; there
    is no PHP here."""
    writing = False


class SubscribeRouteConnection:
    """Same face to the app as connection.Connection (id, traffic, ending, request_close)."""

    __slots__ = ("id", "_config", "_request", "_websocket", "traffic", "_end_request",
                 "_greenlet", "_waiting")

    php_running = False

    def __init__(self, config, request, websocket):
        self.id = str(uuid.uuid4())
        self._config = config
        self._request = request
        self._websocket = websocket
        self.traffic = pump.Traffic()
        self._end_request = None  # the Ending another greenlet asked for
        self._greenlet = None
        self._waiting = False  # the greenlet is in the wait on the client

    @property
    def ending(self):
        """How the connection ended (an Ending), once it did."""
        return self._websocket.ending

    def request_close(self, ending):
        """Ask the connection to end with `ending` (from another greenlet; never waits)."""
        if self._end_request is None:
            self._end_request = ending
            gevent.get_hub().loop.run_callback(self._interrupt)

    def kill_process_now(self):
        pass  # there is none

    def run(self):
        started = time.monotonic()
        self._greenlet = gevent.getcurrent()
        config = self._config
        heartbeat = None
        if config.ping_interval:
            heartbeat = pump.Heartbeat(self._websocket, _NoPhp, config.ping_interval,
                                       config.ping_timeout)
            heartbeat.result.rawlink(self._heartbeat_ended)
        try:
            ending = self._wait_for_end()
        finally:
            if heartbeat is not None:
                heartbeat.stop()
        self._websocket.close(ending)  # unless the client's ending came first
        log_access(self.id, self._request, started, self.traffic, self._websocket.ending,
                   "none (subscribe route)")

    def _wait_for_end(self):
        """The Ending: the client's message, its end, or a request to end."""
        websocket = self._websocket
        self._waiting = True
        try:
            if self._end_request is not None:
                return self._end_request
            message = websocket.receive_message()
        except _EndRequested:
            return self._end_request
        finally:
            self._waiting = False
        if message is not None:
            log.info("the client sent a data message to a subscribe route; closing with 1003",
                     extra=connection_fields(self.id))
            return endings.RECEIVE_ONLY
        return websocket.ending or endings.CLIENT_LEFT

    def _interrupt(self):
        # In the hub, as gevent's Timeout does: the greenlet is parked, so it is either
        # in the wait (and leaves it now) or past it (and sees nothing).
        if self._waiting:
            self._greenlet.throw(_EndRequested())

    def _heartbeat_ended(self, result):
        self.request_close(result.value)
