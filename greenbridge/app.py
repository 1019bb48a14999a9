"""The WSGI application: admits upgrade requests and runs their connections.

A request is checked and admitted before the 101 answer (see
``PendingUpgrade`` in websocket.py), so a refused request costs no process;
the connection then runs in the request's own greenlet.
"""

import logging
import time

import gevent
from dataclasses import dataclass
from typing import Dict, Optional

from greenbridge import devconsole
from greenbridge.connection import Connection
from greenbridge.handshake import MAX_HANDSHAKE_BYTES, request_head_bytes
from greenbridge.origin import OriginPolicy
from greenbridge.routing import Router
from greenbridge.shared import OPEN_CONNECTIONS
from greenbridge.websocket import (CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION, CLOSE_TOO_BIG,
                                   CLOSE_TRY_AGAIN_LATER, Rejected, adopt_stock_websocket,
                                   rejection_response)

log = logging.getLogger("greenbridge.app")

RETRY_AFTER_SECONDS = "5"
# How a refusal is told to a client that has its 101 already (gevent-websocket's stock handler).
_REFUSAL_CLOSE_CODES = {"503": CLOSE_TRY_AGAIN_LATER, "431": CLOSE_TOO_BIG}
# After the last close: time for connection greenlets to end their PHP processes.
_TEARDOWN_SLACK = 5.0


@dataclass(frozen=True)
class Request:
    """What PHP is told about the WebSocket request, and what the origin check needs."""
    client_ip: str
    client_port: int
    server_host: str
    server_port: int
    uri: str
    path: str
    query: str
    headers: Dict[str, str]
    # WSS_TLS and WSS_CLIENT_CERT_* on wss://, empty on ws://.
    tls_variables: Dict[str, str]
    # For the origin check: the host (port included) and scheme the client addressed.
    # The scheme is known only from a trusted proxy (X-Forwarded-Proto), else None.
    addressed_host: str
    addressed_scheme: Optional[str]


def _tls_variables(environ):
    tls = environ.get("greenbridge.tls")  # greenbridge's own wss:// listener
    if tls is not None:
        # Loaded already on wss:// (server.tls_layer); ws:// never loads it.
        from greenbridge.tls.layer import UnreadableClientCertificate, \
            client_certificate_variables
        try:
            return client_certificate_variables(tls)
        except UnreadableClientCertificate as error:
            raise Rejected("400 Bad Request", "unreadable client certificate (%s)"
                           % error) from None
    if environ.get("wsgi.url_scheme") == "https":  # TLS ended by the WSGI server (gunicorn)
        return {"WSS_TLS": "1"}
    return {}


def capture_request(environ, config):
    """Build a Request from the WSGI environ; Rejected (400) if PHP could not be given it."""
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            name = key.replace("_", "-").lower()
        else:
            continue
        headers[name] = _header_text(name, value)
    path = _header_text("request path", environ.get("PATH_INFO", "") or "/")
    query = _header_text("query string", environ.get("QUERY_STRING", ""))
    local_host, local_port = environ.get("greenbridge.local_address") or (
        environ.get("SERVER_NAME", ""), environ.get("SERVER_PORT", "0"))
    client_ip, client_port = environ.get("REMOTE_ADDR", ""), int(environ.get("REMOTE_PORT") or 0)
    server_host, server_port = local_host, int(local_port)
    addressed_host, addressed_scheme = headers.get("host", ""), None
    if config.is_trusted_proxy(client_ip):
        forwarded_ip = _forwarded_client_ip(headers, config)
        if forwarded_ip:
            # The proxy's own port says nothing about the client's.
            client_ip, client_port = forwarded_ip, 0
        server_host, server_port = _forwarded_server(headers, server_host, server_port)
        addressed_host = _first_forwarded(headers, "x-forwarded-host") or addressed_host
        addressed_scheme = _first_forwarded(headers, "x-forwarded-proto").lower() or None
    return Request(
        client_ip=client_ip,
        client_port=client_port,
        server_host=server_host,
        server_port=server_port,
        uri=path + ("?" + query if query else ""),
        path=path,
        query=query,
        headers=headers,
        tls_variables=_tls_variables(environ),
        addressed_host=addressed_host,
        addressed_scheme=addressed_scheme,
    )


def _forwarded_client_ip(headers, config):
    """X-Real-IP, else the right-most X-Forwarded-For entry that is not a trusted proxy."""
    real_ip = headers.get("x-real-ip", "").strip()
    if real_ip:
        return real_ip
    hops = [hop.strip() for hop in headers.get("x-forwarded-for", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not config.is_trusted_proxy(hop):
            return hop
    return hops[0] if hops else ""


def _first_forwarded(headers, name):
    """The first entry of an X-Forwarded-* header: what the client-facing proxy saw ("": none)."""
    return headers.get(name, "").split(",")[0].strip()


def _forwarded_server(headers, host, port):
    """Host and port the client asked for, from X-Forwarded-Host / X-Forwarded-Port."""
    forwarded_host = _first_forwarded(headers, "x-forwarded-host")
    if forwarded_host:
        host = forwarded_host
        name, colon, port_text = forwarded_host.rpartition(":")
        if colon and port_text.isdigit() and not name.endswith(":"):
            host, port = name.strip("[]"), int(port_text)
    port_text = _first_forwarded(headers, "x-forwarded-port")
    if port_text.isdigit() and int(port_text) <= 65535:
        port = int(port_text)
    return host, port


def _header_text(name, value):
    # WSGI hands over the raw bytes as latin-1 text. Clients that send UTF-8
    # get it back as UTF-8; anything else stays latin-1, as HTTP defines it.
    if "\x00" in value:
        raise Rejected("400 Bad Request", "NUL byte in %s" % name)
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


class Admission:
    """One connection slot and one process slot, held until the connection ends."""

    def __init__(self, app, request, endpoint):
        self._app = app
        self.request = request
        self.endpoint = endpoint

    @property
    def subprotocol(self):
        """The subprotocol the 101 answer names (None: no header)."""
        return self.endpoint.subprotocol

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._app.release(self.request.client_ip)
        return False


class BridgeApp:
    """The WSGI application. Upgrade requests become bridged connections.

    It works under greenbridge's own BridgeHandler (which lets it refuse an
    upgrade with an HTTP status before answering 101) and under
    gevent-websocket's stock handler (gunicorn's GeventWebSocketWorker), which
    has answered 101 already: there a refused request is closed with 1013
    (limits) or 1008. Other requests get 426.
    """

    def __init__(self, config, backconnect, counters, metrics, open_backconnect=None):
        """`backconnect` is a started listener, or None: then `open_backconnect()`
        makes one on first use (under a pre-forking WSGI server, after the fork)."""
        self.config = config
        self.backconnect = backconnect
        self._open_backconnect = open_backconnect
        # Shared with the other workers: the limits hold for all of them together.
        self.counters = counters
        self.metrics = metrics
        # Only this process's: with --workers, each worker counts its own.
        self.admitted_per_ip = {}
        self.connections = {}
        self.draining = False
        metrics.watch(self)
        if config.dev_console:
            log.warning("DEV CONSOLE ON: plain GET requests get a page that can start PHP "
                        "processes; never use --dev-console in production")
        self.router = Router(config.routes, config.script, config.message_mode,
                             config.subprotocols)
        self.origin_policy = OriginPolicy(config.allow_origins, config.same_origin)

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
        request = capture_request(environ, self.config)
        self.origin_policy.check(request.headers.get("origin"), request.addressed_host,
                                 request.addressed_scheme)
        endpoint = self.router.endpoint(request.path,
                                        request.headers.get("sec-websocket-protocol"))
        config = self.config
        per_ip_limit = config.max_connections_per_ip
        from_this_ip = self.admitted_per_ip.get(request.client_ip, 0)
        if per_ip_limit and from_this_ip >= per_ip_limit:
            raise Rejected("503 Service Unavailable",
                           "connection limit per address (%d) reached" % per_ip_limit,
                           [("Retry-After", RETRY_AFTER_SECONDS)])
        # Each connection holds one PHP process, so one counter serves both limits.
        admitted, open_connections = self.counters.add_if_below(
            OPEN_CONNECTIONS, min(config.max_connections, config.max_processes))
        if not admitted:
            if open_connections >= config.max_connections:
                reason = "connection limit (%d) reached" % config.max_connections
            else:
                reason = "PHP process limit (%d) reached" % config.max_processes
            raise Rejected("503 Service Unavailable", reason,
                           [("Retry-After", RETRY_AFTER_SECONDS)])
        self.admitted_per_ip[request.client_ip] = from_this_ip + 1
        return Admission(self, request, endpoint)

    def release(self, client_ip):
        """Give back the slots an Admission held."""
        self.counters.add(OPEN_CONNECTIONS, -1)
        remaining = self.admitted_per_ip[client_ip] - 1
        if remaining:
            self.admitted_per_ip[client_ip] = remaining
        else:
            del self.admitted_per_ip[client_ip]

    def serve(self, environ, websocket, admission):
        """Run one connection to its end, in the calling (connection) greenlet."""
        connection = Connection(self.config, self.backconnect, admission.request, websocket,
                                self.metrics, admission.endpoint)
        self.connections[connection.id] = connection
        started = time.monotonic()
        try:
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

    def close_all(self, code=CLOSE_GOING_AWAY, reason="server shutting down"):
        for connection in list(self.connections.values()):
            connection.request_close(code, reason)

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
            websocket.close(_REFUSAL_CLOSE_CODES.get(rejection.status[:3], CLOSE_POLICY_VIOLATION),
                            rejection.reason)
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
