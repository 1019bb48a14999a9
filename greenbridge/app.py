"""The WSGI application: admits upgrade requests and runs their connections.

A request is checked and admitted before the 101 answer (see
``PendingUpgrade`` in handler.py), so a refused request costs no process;
the connection then runs in the request's own greenlet.
"""

import dataclasses
import logging
import time

import gevent

from greenbridge import devconsole, endings
from greenbridge.channels.broker import LocalBroker
from greenbridge.channels.history import history_of
from greenbridge.channels.hub import ChannelHub
from greenbridge.channels.membership import member_of
from greenbridge.channels.recovery import BadRecovery, positions_asked, recover
from greenbridge.channels.tokens import TokenError, presented_token, without_token
from greenbridge.connection import Connection
from greenbridge.frames import CloseCode
from greenbridge.handler import adopt_stock_websocket
from greenbridge.handshake import MAX_HANDSHAKE_BYTES, request_head_bytes
from greenbridge.origin import OriginPolicy
from greenbridge.php_environment import inherited_environment
from greenbridge.request import capture_request
from greenbridge.routing import Router
from greenbridge.shared import OPEN_CONNECTIONS, PHP_PROCESSES
from greenbridge.subscribe_route import SubscribeRouteConnection
from greenbridge.upgrade import Rejected, rejection_response

log = logging.getLogger("greenbridge.app")

RETRY_AFTER_SECONDS = "5"
# How a refusal is told to a client that has its 101 already (gevent-websocket's stock handler).
_REFUSAL_CLOSE_CODES = {"503": CloseCode.TRY_AGAIN_LATER, "431": CloseCode.TOO_BIG}
# After the last close: time for connection greenlets to end their PHP processes.
_TEARDOWN_SLACK = 5.0


class Admission:
    """A connection slot (and, on a PHP route, a process slot), held until the connection ends.
    On a subscribe route, `recover` holds the positions the client asked to recover from
    ({channel: StreamPosition}, channels/recovery.py)."""

    __slots__ = ("_app", "request", "endpoint", "recover")

    def __init__(self, app, request, endpoint, recover=None):
        self._app = app
        self.request = request
        self.endpoint = endpoint
        self.recover = recover

    @property
    def subprotocol(self):
        """The subprotocol the 101 answer names (None: no header)."""
        return self.endpoint.subprotocol

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._app.release(self.request.client_ip, self.endpoint)
        return False


class BridgeApp:
    """The WSGI application. Upgrade requests become bridged connections.

    It works under greenbridge's own BridgeHandler (which lets it refuse an
    upgrade with an HTTP status before answering 101) and under
    gevent-websocket's stock handler (gunicorn's GeventWebSocketWorker), which
    has answered 101 already: there a refused request is closed with 1013
    (limits) or 1008. Other requests get 426.
    """

    def __init__(self, config, backconnect, counters, metrics, open_backconnect=None,
                 channels=None, broker=None):
        """`backconnect` is a started listener, or None: then `open_backconnect()`
        makes one on first use (under a pre-forking WSGI server, after the fork).
        `channels` is this process's ChannelHub, `broker` what publications from
        PHP go through (default: this process's channels only)."""
        self.config = config
        # This process's channels; every connection is a subscriber while it runs.
        self.channels = channels if channels is not None else ChannelHub()
        self.broker = broker if broker is not None else \
            LocalBroker(self.channels, history=history_of(config))
        self.backconnect = backconnect
        self._open_backconnect = open_backconnect
        # Shared with the other workers: the limits hold for all of them together.
        self.counters = counters
        self.metrics = metrics
        # Only this process's: with --workers, each worker counts its own.
        self.admitted_per_ip = {}
        self.connections = {}
        self.draining = False
        self.tokens = None
        if config.token_key is not None:
            # Only then: PyJWT loads cryptography.
            from greenbridge.channels.token_verifier import TokenVerifier
            self.tokens = TokenVerifier(config.token_algorithm, config.token_key)
        metrics.watch(self)
        if config.dev_console:
            log.warning("DEV CONSOLE ON: plain GET requests get a page that can start PHP "
                        "processes; never use --dev-console in production")
        self.router = Router(config.routes, config.script, config.message_mode,
                             config.subprotocols, config.subscribe_routes)
        self.origin_policy = OriginPolicy(config.allow_origins, config.same_origin)
        # The same for every PHP process of this server: decided once.
        self.php_inherited_environment = inherited_environment(config)

    def admit(self, environ):
        """Reserve slots for an upgrade request, or raise Rejected."""
        if self.draining:
            raise Rejected("503 Service Unavailable", "server is shutting down",
                           [("Retry-After", RETRY_AFTER_SECONDS)], kind="shutting_down")
        # greenbridge's handler refuses these before any application runs; a
        # stock one (gunicorn's GeventWebSocketWorker) lets up to 100 lines of
        # 64 KiB through, more than PHP's environment can take.
        if request_head_bytes(environ) > MAX_HANDSHAKE_BYTES:
            raise Rejected("431 Request Header Fields Too Large",
                           "request line and headers over %d bytes" % MAX_HANDSHAKE_BYTES)
        request = capture_request(environ, self.config.is_trusted_proxy)
        self.origin_policy.check(request.headers.get("origin"), request.addressed_host,
                                 request.addressed_scheme)
        endpoint = self.router.endpoint(request.path,
                                        request.headers.get("sec-websocket-protocol"))
        request = dataclasses.replace(request, token=self._verified_token(request, endpoint))
        recover = self._positions_asked(request, endpoint)
        config = self.config
        per_ip_limit = config.max_connections_per_ip
        from_this_ip = self.admitted_per_ip.get(request.client_ip, 0)
        if per_ip_limit and from_this_ip >= per_ip_limit:
            raise Rejected("503 Service Unavailable",
                           "connection limit per address (%d) reached" % per_ip_limit,
                           [("Retry-After", RETRY_AFTER_SECONDS)])
        if not self.counters.add_if_below(OPEN_CONNECTIONS, config.max_connections)[0]:
            raise Rejected("503 Service Unavailable",
                           "connection limit (%d) reached" % config.max_connections,
                           [("Retry-After", RETRY_AFTER_SECONDS)])
        # A subscribe route's connection runs no PHP.
        if not endpoint.receive_only and \
                not self.counters.add_if_below(PHP_PROCESSES, config.max_processes)[0]:
            self.counters.add(OPEN_CONNECTIONS, -1)
            raise Rejected("503 Service Unavailable",
                           "PHP process limit (%d) reached" % config.max_processes,
                           [("Retry-After", RETRY_AFTER_SECONDS)])
        self.admitted_per_ip[request.client_ip] = from_this_ip + 1
        if endpoint.receive_only:
            # No PHP is given its headers or query: it keeps what its access line shows.
            request = dataclasses.replace(request, headers={}, query="",
                                          uri=without_token(request.uri))
        return Admission(self, request, endpoint, recover)

    def _positions_asked(self, request, endpoint):
        """A subscribe route's ``recover=`` positions (None: none); Rejected (400) when
        one is malformed, not the token's or on a plain route. On a PHP route the query is
        the application's."""
        if not endpoint.receive_only:
            return None
        try:
            return positions_asked(request.query, request.token.channels,
                                   endpoint.envelope) or None
        except BadRecovery as error:
            raise Rejected("400 Bad Request", str(error)) from None

    def _verified_token(self, request, endpoint):
        """The request's ConnectionToken, None without one, Rejected (401) when it is
        invalid or missing where one is required (a subscribe route, --require-token)."""
        if self.tokens is None:
            return None  # tokens are off: ?token= is the application's own
        try:
            token = presented_token(request.query, request.headers.get("authorization"))
            if token is not None:
                return self.tokens.verify(token)
            if endpoint.receive_only or self.config.require_token:
                raise TokenError("a token is required (?token= or Authorization: Bearer)")
            return None
        except TokenError as error:
            raise Rejected("401 Unauthorized", str(error),
                           [("WWW-Authenticate", 'Bearer error="invalid_token"')],
                           kind="token") from None

    def release(self, client_ip, endpoint):
        """Give back the slots an Admission held."""
        self.counters.add(OPEN_CONNECTIONS, -1)
        if not endpoint.receive_only:
            self.counters.add(PHP_PROCESSES, -1)
        remaining = self.admitted_per_ip[client_ip] - 1
        if remaining:
            self.admitted_per_ip[client_ip] = remaining
        else:
            del self.admitted_per_ip[client_ip]

    def serve(self, environ, websocket, admission):
        """Run one connection to its end, in the calling (connection) greenlet."""
        request = admission.request
        if admission.endpoint.receive_only:
            connection = SubscribeRouteConnection(self.config, request, websocket)
        else:
            connection = Connection(self.config, self.php_inherited_environment,
                                    self.backconnect, request, websocket, self.metrics,
                                    admission.endpoint, self.channels, self.broker)
        self.connections[connection.id] = connection
        started = time.monotonic()
        try:
            with member_of(self.channels, connection, websocket, request.token,
                           self.config.subscriber_queue_size, admission.endpoint.envelope,
                           admission.recover or ()) as subscriber:
                for channel, since in (admission.recover or {}).items():
                    recover(self.channels, self.broker, subscriber, channel, since,
                            tell_client=True)
                connection.run()
        finally:
            del self.connections[connection.id]
            self.metrics.connection_ended(connection, time.monotonic() - started)

    def drain(self):
        """Refuse new upgrades, let open connections finish for --shutdown-timeout,
        then close the rest with 1001 and end their PHP processes."""
        config = self.config
        self.draining = True
        deadline = time.monotonic() + config.shutdown_timeout
        if self.connections:
            log.info("waiting up to %gs for %d connection(s) to finish",
                     config.shutdown_timeout, len(self.connections))
        while self.connections and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if self.connections:
            log.info("closing %d connection(s) with 1001", len(self.connections))
            self.close_all()
            deadline = time.monotonic() + config.php_kill_grace * 2 + _TEARDOWN_SLACK
            while self.connections and time.monotonic() < deadline:
                gevent.sleep(0.05)
            if self.connections:
                log.warning("%d connection(s) did not end in time; killing their PHP processes",
                            len(self.connections))
                self.kill_all_processes()

    def close_all(self):
        for connection in list(self.connections.values()):
            connection.request_close(endings.SHUTDOWN)

    def kill_all_processes(self):
        for connection in list(self.connections.values()):
            connection.kill_process_now()

    def __call__(self, environ, start_response):
        stock_websocket = environ.get("wsgi.websocket")
        pending = environ.get("greenbridge.upgrade")
        if stock_websocket is not None and pending is None:
            self._bridge_upgraded(environ, stock_websocket)
            return []
        if pending is None and self.config.dev_console:
            return devconsole.serve_page(environ, start_response)
        if pending is None:
            start_response("426 Upgrade Required", [("Upgrade", "websocket"),
                                                    ("Content-Type", "text/plain")])
            return [b"WebSocket upgrade required\n"]
        try:
            pending.check()
            admission = self._admit_with_listener(environ)
        except Rejected as rejection:
            self._count_rejection(environ, rejection)
            return rejection_response(start_response, rejection)
        with admission:
            websocket = pending.accept(self.config.max_message_size, self.config.message_timeout,
                                       self.config.write_buffer_size,
                                       getattr(admission, "subprotocol", None))
            self.serve(environ, websocket, admission)
        return []

    def _bridge_upgraded(self, environ, stock_websocket):
        """Under gevent-websocket's stock handler: the client has its 101 already."""
        websocket = adopt_stock_websocket(stock_websocket, self.config.max_message_size,
                                          self.config.message_timeout,
                                          self.config.write_buffer_size)
        try:
            admission = self._admit_with_listener(environ)
        except Rejected as rejection:
            self._count_rejection(environ, rejection)
            code = _REFUSAL_CLOSE_CODES.get(rejection.status[:3], CloseCode.POLICY_VIOLATION)
            websocket.close(endings.refused(code, rejection.reason))
            return
        with admission:
            self.serve(environ, websocket, admission)

    def _admit_with_listener(self, environ):
        admission = self.admit(environ)
        if self.backconnect is None:
            self.backconnect = self._open_backconnect()
        return admission

    def _count_rejection(self, environ, rejection):
        log.info("%s %s from %s: %s (%s)", environ.get("REQUEST_METHOD"),
                 environ.get("PATH_INFO"), environ.get("REMOTE_ADDR"),
                 rejection.status, rejection.reason)
        self.metrics.handshake_rejections.labels(reason=rejection.kind).inc()
