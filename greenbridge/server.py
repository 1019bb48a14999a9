"""Binding the listeners, running a server, signals, and graceful shutdown.

First SIGINT/SIGTERM: stop accepting, let connections finish for up to
--shutdown-timeout, then close the rest with 1001 and end their PHP
processes; exit 0. A second signal kills every PHP group and exits at once.
"""

import logging
import os
import signal
import time

import gevent
from gevent import socket
from gevent.event import Event
from gevent.pywsgi import WSGIServer

from greenbridge.app import BridgeApp
from greenbridge.backconnect import BackConnectListener
from greenbridge.shared import COUNTER_NAMES, SharedCounters
from greenbridge.workers import Arbiter
from greenbridge.websocket import BridgeHandler

log = logging.getLogger("greenbridge.server")

EXIT_OK = 0
EXIT_IMMEDIATE = 1
EXIT_CANNOT_LISTEN = 1
# After the last close: time for connection greenlets to end their PHP processes.
_TEARDOWN_SLACK = 5.0
_LISTEN_BACKLOG = 1024


def run(config):
    """Serve until a signal ends it; with --workers over 1, as the workers' arbiter."""
    try:
        listeners = Listeners.bind(config)
    except OSError as error:
        log.error("cannot listen: %s", error)
        return EXIT_CANNOT_LISTEN
    counters = SharedCounters(COUNTER_NAMES, config.workers)
    if config.workers == 1:
        return serve(config, listeners, counters)
    return Arbiter(config, listeners, counters,
                   lambda number: serve(config, listeners, counters, number)).run()


class Listeners:
    """The WebSocket listening socket and one back-connection socket per worker.

    All are bound before any worker starts, so a port in use fails start-up
    once, and a replaced worker takes over its predecessor's sockets.
    """

    def __init__(self, websocket, backconnect):
        self.websocket = websocket
        self.backconnect = backconnect

    @classmethod
    def bind(cls, config):
        sockets = []
        try:
            sockets.append(listen_tcp(config.ws_host, config.ws_port))
            for number in range(config.workers):
                port = config.tcp_port + number if config.tcp_port else 0
                sockets.append(listen_tcp(config.tcp_bind, port))
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        return cls(sockets[0], sockets[1:])

    def close_websocket(self):
        self.websocket.close()


def listen_tcp(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def serve(config, listeners, counters, worker_number=None):
    """Run one server (the only one, or worker `worker_number`) until a signal ends it."""
    index = (worker_number or 1) - 1
    counters.use_row(index)
    backconnect = BackConnectListener(listeners.backconnect[index], config.write_buffer_size)
    app = BridgeApp(config, backconnect, counters)
    ws_server = WSGIServer(listeners.websocket, app, handler_class=BridgeHandler,
                           log=None, error_log=logging.getLogger("greenbridge.wsgi"))
    backconnect.start()
    ws_server.start()

    host, port = ws_server.address[:2]
    tcp_host, tcp_port = backconnect.address
    who = "greenbridge" if worker_number is None else \
        "greenbridge worker %d (pid %d)" % (worker_number, os.getpid())
    log.info("%s listening on ws://%s:%d (PHP connects back to %s:%d); script %s",
             who, host, port, tcp_host, tcp_port, config.script)

    stop_requested = Event()
    # Under an arbiter, SIGINT (a Ctrl-C reaching the whole process group)
    # is the arbiter's to handle; it passes it on as SIGTERM.
    signals = (signal.SIGINT, signal.SIGTERM) if worker_number is None else (signal.SIGTERM,)
    _install_signal_handlers(stop_requested, app, signals)
    stop_requested.wait()
    _shut_down(ws_server, backconnect, app, config)
    log.info("%s stopped", who)
    return EXIT_OK


def _install_signal_handlers(stop_requested, app, signals):
    def on_signal(signum):
        if stop_requested.is_set():
            log.warning("second %s: killing all PHP processes and exiting now",
                        signal.Signals(signum).name)
            app.kill_all_processes()
            logging.shutdown()
            os._exit(EXIT_IMMEDIATE)
        log.info("%s: shutting down (again to exit at once)", signal.Signals(signum).name)
        stop_requested.set()

    for signum in signals:
        gevent.signal_handler(signum, on_signal, signum)


def _shut_down(ws_server, backconnect, app, config):
    app.draining = True
    ws_server.close()
    deadline = time.monotonic() + config.shutdown_timeout
    if app.connections:
        log.info("waiting up to %gs for %d connection(s) to finish",
                 config.shutdown_timeout, len(app.connections))
    while app.connections and time.monotonic() < deadline:
        gevent.sleep(0.05)
    if app.connections:
        log.info("closing %d connection(s) with 1001", len(app.connections))
        app.close_all()
        deadline = time.monotonic() + config.php_kill_grace * 2 + _TEARDOWN_SLACK
        while app.connections and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if app.connections:
            log.warning("%d connection(s) did not end in time; killing their PHP processes",
                        len(app.connections))
            app.kill_all_processes()
    backconnect.close()
