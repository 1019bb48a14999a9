"""Binding the listeners, running a server, signals, and graceful shutdown.

First SIGINT/SIGTERM: stop accepting, let connections finish for up to
--shutdown-timeout, then close the rest with 1001 and end their PHP
processes; exit 0. A second signal kills every PHP group and exits at once.
"""

import gc
import logging
import os
import resource
import signal
import socket

import gevent
from gevent.event import Event
from gevent.pywsgi import WSGIServer
from greenlet import greenlet

from greenbridge.adapters.gevent_pywsgi import BadRequestAnswer, HandleInOneLoop
from greenbridge.app import BridgeApp
from greenbridge.backconnect import ACCEPT_BACKOFF, OUT_OF_RESOURCES, BackConnectListener
from greenbridge.channels.api import ServerApi
from greenbridge.channels.broker import LocalBroker
from greenbridge.channels.history import history_of
from greenbridge.channels.hub import ChannelHub
from greenbridge.channels.workers import WorkerLinks
from greenbridge.handshake import PendingHandshakes
from greenbridge.head import without_body_for_head
from greenbridge.listening import ADMIN, BACKCONNECT, WEBSOCKET, ListenError, is_loopback, \
    listen_for
from greenbridge.logs import RateLimitedLog, format_address
from greenbridge.metrics import AdminApp, Metrics, MetricsChannel, WorkersMetrics
from greenbridge.php_environment import withheld_for_secrets
from greenbridge.shared import COUNTER_NAMES, SharedCounters
from greenbridge.systemd import Notifier
from greenbridge.tls import TLSSetupError
from greenbridge.workers import Arbiter
from greenbridge.handler import BAD_REQUEST_RESPONSE, BridgeHandler

log = logging.getLogger("greenbridge.server")
admin_log = logging.getLogger("greenbridge.admin")

EXIT_OK = 0
EXIT_IMMEDIATE = 1
EXIT_BAD_CONFIG = 2
# Requests being read on the admin listener at once: scrapers and probes need a few.
_ADMIN_MAX_PENDING = 16


class BridgeServer(HandleInOneLoop):
    """A WSGIServer that rides out running out of descriptors.

    gevent's own server prints a traceback for every failed accept; this one
    logs at most one line a second, pauses accepting briefly and goes on.
    It also keeps the register of connections not yet upgraded (see
    handshake.py), each under one budget from accept, the TLS handshake on
    wss:// included.
    """

    # One accept per readiness, not gevent's 100: workers share the listening
    # socket, and a worker that takes a burst of connections at once leaves the
    # other cores idle. 50 connections opened together by the benchmark went
    # 47 to 3 (and 27 to 23); one at a time, each worker goes back to its loop
    # between accepts and they split about evenly (28/22, 25/25, 26/24). The
    # split depends on scheduling, so the benchmark shows it, not a test.
    max_accept = 1

    def __init__(self, listener, application, handshakes, tls=None, **kwargs):
        super().__init__(listener, application, **kwargs)
        self.handshakes = handshakes
        self.tls = tls
        self._log_accept_error = RateLimitedLog(log, logging.ERROR)

    def handle(self, sock, address):
        # One budget from accept to the 101 answer, TLS handshake included.
        with self.handshakes.budget(sock, address, "in the TLS handshake" if self.tls else None):
            if self.tls is not None:
                sock = self.tls.accept(sock, address)
                if sock is None:
                    return
                self.handshakes.phase_over()
            super().handle(sock, address)

    def do_read(self):
        try:
            return super().do_read()
        except OSError as error:
            if error.errno not in OUT_OF_RESOURCES:
                raise
            self._log_accept_error("accept failed: %s; pausing accepts for %gs",
                                   error.strerror, ACCEPT_BACKOFF)
        self.stop_accepting()
        gevent.spawn_later(ACCEPT_BACKOFF, self._resume_accepting)
        return None

    def _resume_accepting(self):
        if not self.closed:
            self.start_accepting()


def run(config):
    """Serve until a signal ends it; with --workers over 1, as the workers' arbiter."""
    tls = None
    if config.tls_mode != "none":
        # Once, before any worker starts: every worker serves the same certificate.
        tls = tls_layer(config)
        try:
            tls.load()
        except TLSSetupError as error:
            log.error("%s", error)
            tls.close()
            return EXIT_BAD_CONFIG
    try:
        listeners = Listeners.bind(config)
    except ListenError as error:
        log.error("%s", error)
        if tls is not None:
            tls.close()
        return EXIT_BAD_CONFIG
    # After the binding: a port in use is then the only line a newcomer sees.
    raise_open_files_limit()
    warn_if_backconnect_reachable(listeners)
    warn_if_any_page_may_connect(config, listeners)
    warn_about_withheld_variables(config)
    counters = SharedCounters(COUNTER_NAMES, config.workers)
    notifier = Notifier(config.notify_socket)
    if config.workers == 1:
        return serve(config, listeners, counters, notifier=notifier, tls=tls)

    # The arbiter holds the one admin listener; a scrape asks every worker, and
    # the server API's publications and questions go to every worker.
    scrapes = [MetricsChannel() for _ in range(config.workers)]
    # With --broker each worker is a node of its own and Redis reaches them all.
    links = None if config.broker else WorkerLinks(config.max_payload_size)
    api_broker = links if links is not None else channel_broker(config, None)
    admin_server = None

    def serve_worker(number):
        if admin_server is not None:
            admin_server.close()  # the arbiter's, inherited through the fork
        return serve(config, listeners, counters, number, metrics_channel=scrapes[number - 1],
                     tls=tls, links=links)

    arbiter = Arbiter(config, listeners, counters, serve_worker, notifier, links)
    if listeners.admin is not None:
        admin_server = start_admin_server(
            listeners.admin, AdminApp(WorkersMetrics(scrapes),
                                      lambda: arbiter.not_ready_because() or
                                      api_broker.not_ready_because(),
                                      server_api(config, api_broker)),
            config.handshake_timeout)
    notifier.ready("%d workers listening on %s:%d" % ((config.workers,) +
                                                      listeners.websocket.getsockname()[:2]))
    return arbiter.run()


def channel_broker(config, hub):
    """The RedisBroker of --broker for this process (`hub` None: the arbiter's, for the
    API only), or None without --broker."""
    if not config.broker:
        return None
    # Imported here: without --broker, redis-py is not loaded.
    from greenbridge.channels.redis_broker import redis_broker
    from greenbridge.settings.channels import redacted_broker_url

    if hub is not None:
        log.info("channels shared with the other nodes through Redis at %s",
                 redacted_broker_url(config.broker))
    return redis_broker(config, hub)


def server_api(config, broker):
    """The server API on the admin listener, when --api-key is set."""
    if not config.api_key:
        return None
    return ServerApi(broker, config.api_key, config.max_payload_size)


def tls_layer(config):
    """The TLS layer for --tls-mode (not none), with ACME for automate.

    Imported here, not at the top: a plain ws:// server loads neither OpenSSL
    nor cryptography, and only automate loads the ACME side.
    """
    from greenbridge.tls.holder import CertificateHolder
    from greenbridge.tls.layer import TLSLayer

    holder = CertificateHolder()
    renewer = None
    if config.tls_mode == "automate":
        from greenbridge.acme.renewal import CertificateManager
        renewer = CertificateManager(config.acme, holder)
    return TLSLayer(config, holder, renewer)


class Listeners:
    """The WebSocket listening socket, one back-connection socket per worker,
    and the admin socket when asked for.

    All are bound before any worker starts, so a port in use fails start-up
    once (ListenError), and a replaced worker takes over its predecessor's sockets.
    """

    def __init__(self, websocket, backconnect, admin):
        self.websocket = websocket
        self.backconnect = backconnect
        self.admin = admin

    @classmethod
    def bind(cls, config):
        sockets = []
        try:
            sockets.append(listen_for(WEBSOCKET, config.ws_host, config.ws_port))
            for number in range(config.workers):
                port = config.tcp_port + number if config.tcp_port else 0
                port_text = "%d (worker %d listens on %d)" % (config.tcp_port, number + 1,
                                                              port) if number else None
                sockets.append(listen_for(BACKCONNECT, config.tcp_bind, port, port_text))
            admin = None
            if config.admin_port is not None:
                admin = listen_for(ADMIN, config.admin_host, config.admin_port)
                sockets.append(admin)
        except ListenError:
            for sock in sockets:
                sock.close()
            raise
        return cls(sockets[0], sockets[1:1 + config.workers], admin)

    def close_websocket(self):
        self.websocket.close()


class AdminHandler(BadRequestAnswer):
    """Reads each admin request under the handshake deadline, counted in its server's register.

    An idle keep-alive connection waits for its next request here too, so it
    is dropped like any other silent one (the register shuts its socket down).
    """

    def handle(self):
        try:
            # gevent sends an answer's head and its body in two writes: with Nagle's
            # algorithm the body waits for the client's delayed ACK of the head, 40 ms,
            # so a keep-alive API client could publish only about 22 times a second.
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle()
        except ConnectionError as error:  # gone before its answer (or its 400) was written
            self.server.log_refusal("admin client %s: %s", format_address(self.client_address),
                                    error)

    def handle_one_request(self):
        with self.server.requests.budget(self.socket, self.client_address):
            return super().handle_one_request()

    def read_request(self, raw_requestline):
        result = super().read_request(raw_requestline)
        # The request is in: answering it (a scrape asks every worker) has no deadline.
        self.server.requests.end()
        return result

    def answer_bad_request(self, error):
        # gevent prints a traceback for some (over 100 headers): one line is enough.
        self.server.log_refusal("bad admin request from %s: %s",
                                format_address(self.client_address),
                                str(error) or type(error).__name__)
        return "400", BAD_REQUEST_RESPONSE


class AdminServer(WSGIServer):
    """The admin listener: strangers holding sockets open cannot keep out /healthz."""

    handler_class = AdminHandler
    # One accept per readiness: each new socket is counted (and the oldest
    # silent one dropped) before the next is taken, so a burst of connections
    # cannot take more descriptors than the register allows.
    max_accept = 1

    def __init__(self, listener, admin_app, handshake_timeout):
        super().__init__(listener, without_body_for_head(admin_app), log=None,
                         error_log=admin_log)
        self.requests = PendingHandshakes(_ADMIN_MAX_PENDING, handshake_timeout,
                                          name="admin requests", awaited="complete request",
                                          who="admin client")
        # Strangers can make these lines as fast as they like.
        self.log_refusal = RateLimitedLog(admin_log, logging.INFO)


def start_admin_server(listener, admin_app, handshake_timeout):
    admin_server = AdminServer(listener, admin_app, handshake_timeout)
    admin_server.start()
    log.info("admin endpoints on http://%s:%d/ (/metrics, /healthz, /readyz)",
             *admin_server.address[:2])
    return admin_server


def serve(config, listeners, counters, worker_number=None, notifier=None,
          metrics_channel=None, tls=None, links=None):
    """Run one server (the only one, or worker `worker_number`, linked to the
    other workers' channels through `links`) until a signal ends it."""
    index = (worker_number or 1) - 1
    counters.use_row(index)
    metrics = Metrics()
    backconnect = BackConnectListener(listeners.backconnect[index], config.write_buffer_size,
                                      config.max_processes, metrics)
    channels = ChannelHub()
    broker = channel_broker(config, channels)
    if broker is None:
        broker = LocalBroker(channels, history=history_of(config)) if links is None else \
            links.in_worker(worker_number, channels)
    app = BridgeApp(config, backconnect, counters, metrics, channels=channels, broker=broker)
    handshakes = PendingHandshakes(config.max_pending_handshakes, config.handshake_timeout)
    ws_server = BridgeServer(listeners.websocket, without_body_for_head(app), handshakes, tls=tls,
                             handler_class=BridgeHandler, log=None,
                             error_log=logging.getLogger("greenbridge.wsgi"))
    notifier = notifier or Notifier("")  # under an arbiter, the arbiter tells systemd
    # Before anything listens or says it does: a SIGTERM from then on is a clean stop.
    stop_requested = Event()
    # Under an arbiter, SIGINT (a Ctrl-C reaching the whole process group)
    # is the arbiter's to handle; it passes it on as SIGTERM.
    signals = (signal.SIGINT, signal.SIGTERM) if worker_number is None else (signal.SIGTERM,)
    _install_signal_handlers(stop_requested, app, signals, notifier, tls)
    gevent.signal_handler(signal.SIGUSR1, log_status, app, ws_server)
    if tls is not None:
        tls.start_background(renews=worker_number in (None, 1))
        metrics.watch_certificate(tls.holder)
    backconnect.start()
    ws_server.start()
    admin_server = None
    if worker_number is None and listeners.admin is not None:
        admin_server = start_admin_server(
            listeners.admin, AdminApp(metrics, lambda: _not_ready_because(ws_server, app, tls,
                                                                          broker),
                                      server_api(config, broker)),
            config.handshake_timeout)
    if metrics_channel is not None:
        metrics_channel.answer_scrapes(metrics)

    host, port = ws_server.address[:2]
    tcp_host, tcp_port = backconnect.address
    who = "greenbridge" if worker_number is None else \
        "greenbridge worker %d (pid %d)" % (worker_number, os.getpid())
    log.info("%s listening on %s://%s:%d (PHP connects back to %s:%d); script %s, "
             "%d route(s), %s mode", who, "ws" if tls is None else "wss", host, port, tcp_host,
             tcp_port, config.script, len(config.routes), config.message_mode)
    notifier.ready("listening on %s:%d" % (host, port))
    stop_requested.wait()
    notifier.stopping()
    _shut_down(ws_server, backconnect, app, config)
    broker.close()
    if admin_server is not None:
        admin_server.close()
    if tls is not None:
        tls.close()
    log.info("%s stopped", who)
    return EXIT_OK


def _not_ready_because(ws_server, app, tls, broker):
    if app.draining:
        return "shutting down"
    if ws_server.closed:
        return "WebSocket listener closed"
    if tls is not None and tls.holder.served is None:
        return "no TLS certificate loaded"
    return broker.not_ready_because()


def warn_if_backconnect_reachable(listeners):
    host = listeners.backconnect[0].getsockname()[0]
    if not is_loopback(host):
        log.warning("the back-connection listener is on %s, not loopback: anyone who can reach "
                    "it may try connection IDs; keep --tcp-bind on 127.0.0.1 or firewall it",
                    host)


def warn_if_any_page_may_connect(config, listeners):
    """Once, in the process that bound the port: browsers on other machines can reach
    it, and no origin check keeps out the pages they show."""
    host = listeners.websocket.getsockname()[0]
    if not (is_loopback(host) or config.allow_origins or config.same_origin):
        log.warning("listening on %s without an origin check: any web page a user visits "
                    "can open connections here with the user's cookies (cross-site "
                    "WebSocket hijacking); set --allow-origin or --same-origin", host)


def warn_about_withheld_variables(config):
    """Say which variables PHP does not get because they hold a secret setting's value."""
    names = withheld_for_secrets(config)
    if names:
        log.warning("not passed to PHP: %s (the value holds a setting marked secret, such "
                    "as --tls-eab-mac-key)", ", ".join(names))


def raise_open_files_limit():
    """Every connection costs several descriptors: use all the system allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:
            log.warning("could not raise the open files limit to %s: %s", hard, error)
    log.info("open files limit: %s (hard limit %s)", _limit_text(soft), _limit_text(hard))


def _limit_text(limit):
    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)


def log_status(app, ws_server):
    """One line of what the server holds now (SIGUSR1), for operators and leak checks."""
    # Counting greenlets walks the heap: a few milliseconds, only when asked.
    greenlets = sum(1 for thing in gc.get_objects() if isinstance(thing, greenlet))
    log.info("status: %d connections, %d pending handshakes, %d greenlets, "
             "%d open descriptors", len(app.connections), len(ws_server.handshakes), greenlets,
             len(os.listdir("/proc/self/fd")))


def _install_signal_handlers(stop_requested, app, signals, notifier, tls):
    def on_signal(signum):
        if stop_requested.is_set():
            log.warning("second %s: killing all PHP processes and exiting now",
                        signal.Signals(signum).name)
            app.kill_all_processes()
            logging.shutdown()
            os._exit(EXIT_IMMEDIATE)
        log.info("%s: shutting down (again to exit at once)", signal.Signals(signum).name)
        stop_requested.set()

    def on_reload():
        # Nothing is reloadable but the TLS certificate.
        notifier.reloading()
        log.info("SIGHUP: reloading")
        if tls is not None:
            tls.reload("SIGHUP")
        notifier.ready()

    for signum in signals:
        gevent.signal_handler(signum, on_signal, signum)
    gevent.signal_handler(signal.SIGHUP, on_reload)


def _shut_down(ws_server, backconnect, app, config):
    ws_server.close()
    app.drain()
    backconnect.close()
