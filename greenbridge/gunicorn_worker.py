"""A gunicorn worker class that checks and admits WebSocket upgrades before answering 101.

    gunicorn -k greenbridge.gunicorn_worker.BridgeWorker -w 2 greenbridge.wsgi:application

gevent-websocket's own worker (GeventWebSocketWorker) answers 101 before
the application runs, so greenbridge can only refuse an upgrade there by
closing the fresh WebSocket (1013 when full). With this worker a full
server answers HTTP 503 and a malformed upgrade 400, as the standalone
server does, and a connection gets the standalone server's handshake limits
(see handshake.py): one --handshake-timeout budget from accept (gunicorn's
TLS handshake included) to 101, --max-pending-handshakes, 16 KiB of headers.
Everything else is gunicorn's gevent pywsgi worker.

Checked against gunicorn 27.0.1 and gevent 26.9.0, relying on what is not
their documented API: gunicorn's gevent worker builds its server from the
``server_class`` and ``wsgi_handler`` class attributes (PyWSGIServer,
PyWSGIHandler), and gevent's StreamServer, given gunicorn's TLS options,
hands each accepted socket to ``wrap_socket_and_handle(client_socket,
address)``, which calls ``self.wrap_socket(socket, **self.ssl_args)``.
tests/test_adapters.py checks these.
"""

import logging

from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

from greenbridge.handshake import PendingHandshakes
from greenbridge.logs import format_address
from greenbridge.handler import BridgeHandler
from greenbridge.wsgi import handshake_limits

CHECKED_AGAINST = {"gunicorn": "27.0.1", "gevent": "26.9.0"}

log = logging.getLogger("greenbridge.gunicorn")


class _Handler(BridgeHandler, PyWSGIHandler):
    """greenbridge's upgrade handling with gunicorn's environ additions."""


class _Server(PyWSGIServer):
    """gunicorn's gevent server, keeping the register of connections not yet upgraded."""

    # The port may serve a whole site beside greenbridge (route_upgrades): the
    # time that site spends on a plain request is not a handshake's.
    port_shared = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.handshakes = PendingHandshakes(*handshake_limits())

    def wrap_socket_and_handle(self, client_socket, address):
        # gunicorn's --certfile: the TLS handshake (in wrap_socket) spends the budget too.
        with self.handshakes.budget(client_socket, address, "in the TLS handshake"):
            try:
                tls_socket = self.wrap_socket(client_socket, **self.ssl_args)
            except OSError as error:  # ssl.SSLError included: the client's failure
                log.debug("TLS handshake with %s failed: %s", format_address(address), error)
                client_socket.close()
                return
            with tls_socket:
                self.handle(tls_socket, address)

    def handle(self, sock, address):
        with self.handshakes.budget(sock, address):
            self.handshakes.phase_over()
            super().handle(sock, address)


class BridgeWorker(GeventPyWSGIWorker):
    server_class = _Server
    wsgi_handler = _Handler
