"""gevent-websocket's handler, made to let the application refuse an upgrade before it is answered.

gevent-websocket's own handler answers 101 before the application runs.
``BridgeHandler`` offers the upgrade to the application instead
(``PendingUpgrade``): the application checks the request and admits it first,
so a full server answers 503 and never spawns anything. Under the stock
handler (gunicorn) the application adopts the stock WebSocket
(``adopt_stock_websocket``). Requests are read under the limits of
handshake.py; the checks themselves are upgrade.py's.
"""

import logging
from socket import IPPROTO_TCP, SO_SNDBUF, SOL_SOCKET, TCP_NODELAY

from greenbridge.adapters.gevent_pywsgi import forget_parsed_request
from greenbridge.adapters.gevent_websocket import (Stream, UpgradeLaterHandler, forget_stream,
                                                    retire)
from greenbridge.handshake import (MAX_HANDSHAKE_BYTES, UNLIMITED_HANDSHAKES, CappedReader,
                                   HandshakeAborted)
from greenbridge.logs import format_address
from greenbridge.http_token import is_token
from greenbridge.upgrade import (Rejected, accept_key, check_header_section, check_upgrade_request,
                                 wants_websocket)
from greenbridge.websocket import BridgeWebSocket

log = logging.getLogger("greenbridge.handler")


def bare_response(status):
    """An HTTP error answer without a body, as gevent sends for a client's error."""
    return b"HTTP/1.1 %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n" % status.encode()


BAD_REQUEST_RESPONSE = bare_response("400 Bad Request")


class PendingUpgrade:
    """What BridgeHandler puts in the environ as ``greenbridge.upgrade``.

    The application checks the request (``check``), decides whether to admit
    it, and only then calls ``accept``, which answers 101: a refused request
    gets a plain HTTP error and costs no process. Middleware around the
    application sees ordinary WSGI calls.
    """

    __slots__ = ("_handler",)

    def __init__(self, handler):
        self._handler = handler

    def check(self):
        check_upgrade_request(self._handler.environ, self._handler.request_version)

    def accept(self, max_payload_size, message_timeout, socket_buffer_size, subprotocol=None):
        """Answer 101 Switching Protocols; return the BridgeWebSocket."""
        handler = self._handler
        environ = handler.environ
        _tune_client_socket(handler.socket, socket_buffer_size)
        websocket = BridgeWebSocket(environ, Stream(handler), handler, max_payload_size,
                                    message_timeout)
        handler.websocket = websocket
        environ["wsgi.websocket"] = websocket
        environ["wsgi.websocket_version"] = "13"
        headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                   ("Sec-WebSocket-Accept", accept_key(environ["HTTP_SEC_WEBSOCKET_KEY"]))]
        if subprotocol:
            headers.append(("Sec-WebSocket-Protocol", subprotocol))
        handler.start_response("101 Switching Protocols", headers)
        handler.write(b"")
        handler.handshakes.end()
        forget_request(handler, websocket)
        return websocket


# What middleware around the application may still read once it returns (up to five
# keys: a dict's smallest table).
_ENVIRON_KEPT = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "REMOTE_ADDR", "wsgi.websocket")


def forget_request(handler, websocket):
    """Let go of the request once it is answered with 101: the connection's greenlet keeps
    the handler, its environ and the websocket for as long as the connection lasts.

    The application took what it needs (request.py's Request); the environ
    keeps what a WSGI middleware may log after the application returned,
    without the headers or the query (a connection token); gevent's handler
    reads none of what goes here after the response was sent.
    """
    environ = handler.environ
    kept = {key: environ[key] for key in _ENVIRON_KEPT if key in environ}
    environ.clear()  # frees its table, which a deletion of keys would not
    environ.update(kept)
    forget_parsed_request(handler)
    forget_stream(websocket)


def adopt_stock_websocket(stock, max_payload_size, message_timeout, socket_buffer_size):
    """A BridgeWebSocket on the stream of gevent-websocket's own, already upgraded, WebSocket.

    Under a stock WebSocketHandler (gunicorn's GeventWebSocketWorker) the 101
    went out before the application ran; from here on greenbridge's class
    reads and writes the frames. The stock object is marked closed so that
    its handler does not send a second close frame.
    """
    _tune_client_socket(stock.handler.socket, socket_buffer_size)
    websocket = BridgeWebSocket(stock.environ, stock.stream, stock.handler, max_payload_size,
                                message_timeout)
    retire(stock)
    return websocket


def _tune_client_socket(sock, socket_buffer_size):
    sock.setsockopt(SOL_SOCKET, SO_SNDBUF, socket_buffer_size)
    # Each frame goes out in one send already: Nagle's algorithm could only
    # hold a small reply back until the client acknowledges the previous one.
    sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)


class BridgeHandler(UpgradeLaterHandler):
    """Hands every request to the WSGI application, upgrades only when it accepts.

    gevent-websocket's own handler answers 101 before the application runs.
    This one offers the upgrade as ``environ["greenbridge.upgrade"]`` (see
    PendingUpgrade) and otherwise behaves as a plain WSGI handler.

    Each request is read under the limits of ``handshake.py``: 16 KiB, and,
    under a server that keeps the ``handshakes`` register (greenbridge's own,
    gunicorn_worker's), the connection's one budget until the 101 answer.
    A server that shares its port with other applications (gunicorn) sets
    ``port_shared``: the time such an application spends on a plain request
    is its own.
    """

    @property
    def handshakes(self):
        return getattr(self.server, "handshakes", UNLIMITED_HANDSHAKES)

    def handle(self):
        try:
            super().handle()
        except (HandshakeAborted, ConnectionError) as ended:
            # Gone while its request was read or answered (gevent sends error answers unguarded).
            log.debug("client %s: %s", format_address(self.client_address), ended)

    def handle_one_request(self):
        self.rfile = CappedReader(self.rfile, MAX_HANDSHAKE_BYTES)
        try:
            return super().handle_one_request()
        finally:
            self._uncap()

    def read_request(self, raw_requestline):
        self._check_method(raw_requestline)
        try:
            result = super().read_request(raw_requestline)
        except OSError as error:  # not a bad request: the connection broke or was shut down
            raise HandshakeAborted(str(error)) from None
        if self.rfile.ended:
            # http.client took what came before the end as the whole header section.
            raise HandshakeAborted("connection ended inside the request headers")
        check_header_section(self.headers)
        # The headers are in: a body or WebSocket frames are read without the cap.
        self._uncap()
        return result

    @staticmethod
    def _check_method(raw_requestline):
        # gevent takes any word for the method, and the method is logged and
        # handed to the application: only a token gets that far.
        method = raw_requestline.split(None, 1)[:1]  # gevent's first word
        if method and not is_token(method[0]):
            raise ValueError("method %r is not an HTTP token" % method[0][:50])

    def _uncap(self):
        if isinstance(self.rfile, CappedReader):
            self.rfile = self.rfile.stream

    def answer_bad_request(self, error):
        # gevent prints a traceback for some client errors (too many headers);
        # a client's mistake is worth one line.
        log.info("bad request from %s: %s", format_address(self.client_address),
                 str(error) or type(error).__name__)
        if isinstance(error, Rejected):  # too large, malformed
            return error.status[:3], bare_response(error.status)
        return "400", BAD_REQUEST_RESPONSE

    def run_application(self):
        self.environ["greenbridge.local_address"] = self.socket.getsockname()[:2]
        # The pyOpenSSL connection on a wss:// listener (see tls/greensocket.py).
        self.environ["greenbridge.tls"] = getattr(self.socket, "tls", None)
        if wants_websocket(self.environ):
            # Checked and admitted within the budget; PendingUpgrade.accept ends it.
            self.environ["greenbridge.upgrade"] = PendingUpgrade(self)
        elif getattr(self.server, "port_shared", False):
            self.handshakes.pause()
            try:
                self.run_plain_application()
            finally:
                self.handshakes.resume()
            return
        self.run_plain_application()

    def log_request(self):
        # Upgrades get one access line when they end; rejections are logged by the app.
        pass
