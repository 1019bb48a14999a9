"""Building the servers, signals, and graceful shutdown.

First SIGINT/SIGTERM: stop accepting, let connections finish for up to
--shutdown-timeout, then close the rest with 1001 and end their PHP
processes; exit 0. A second signal kills every PHP group and exits at once.
"""

import logging
import os
import signal
import time

import gevent
from gevent.event import Event
from gevent.pywsgi import WSGIServer

from greenbridge.app import BridgeApp
from greenbridge.backconnect import BackConnectListener
from greenbridge.websocket import BridgeHandler

log = logging.getLogger("greenbridge.server")

EXIT_OK = 0
EXIT_IMMEDIATE = 1
EXIT_CANNOT_LISTEN = 1
# After the last close: time for connection greenlets to end their PHP processes.
_TEARDOWN_SLACK = 5.0


def run(config):
    backconnect = BackConnectListener(config.tcp_bind, config.tcp_port, config.write_buffer_size)
    app = BridgeApp(config, backconnect)
    ws_server = WSGIServer((config.ws_host, config.ws_port), app, handler_class=BridgeHandler,
                           log=None, error_log=logging.getLogger("greenbridge.wsgi"))
    try:
        backconnect.start()
        ws_server.start()
    except OSError as error:
        log.error("cannot listen: %s", error)
        backconnect.close()
        return EXIT_CANNOT_LISTEN

    host, port = ws_server.address[:2]
    tcp_host, tcp_port = backconnect.address
    log.info("greenbridge listening on ws://%s:%d (PHP connects back to %s:%d); script %s",
             host, port, tcp_host, tcp_port, config.script)

    stop_requested = Event()
    _install_signal_handlers(stop_requested, app)
    stop_requested.wait()
    _shut_down(ws_server, backconnect, app, config)
    log.info("greenbridge stopped")
    return EXIT_OK


def _install_signal_handlers(stop_requested, app):
    def on_signal(signum):
        if stop_requested.is_set():
            log.warning("second %s: killing all PHP processes and exiting now",
                        signal.Signals(signum).name)
            app.kill_all_processes()
            logging.shutdown()
            os._exit(EXIT_IMMEDIATE)
        log.info("%s: shutting down (again to exit at once)", signal.Signals(signum).name)
        stop_requested.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
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
