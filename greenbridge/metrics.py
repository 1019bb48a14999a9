"""Counters and histograms (Prometheus), and the admin endpoints that serve them.

The admin listener answers ``/metrics`` (Prometheus text format), ``/healthz``
(the process is alive) and ``/readyz`` (ready for new connections). Values
that describe the present (open connections, running PHP processes, bytes of
open connections) are read from the application when scraped, so the data
path pays nothing for them.
"""

import itertools
import logging

import gevent
from gevent import socket
from gevent.lock import Semaphore
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from greenbridge.channels.api import PATH_PREFIX as API_PATH_PREFIX

log = logging.getLogger("greenbridge.metrics")

# "*_created" timestamps would be one more series per metric and worker, for nothing.
disable_created_metrics()
# A worker that does not answer a scrape within this time is left out of it.
_WORKER_SCRAPE_TIMEOUT = 2.0
_SCRAPE_REPLY_MAX_BYTES = 1 << 20

# Spawn to connect-back: PHP start-up is tens of milliseconds; a slow one is seconds.
_CONNECT_BACK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# WebSocket connections last from a blink to days.
_DURATION_BUCKETS = (0.1, 1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    """Every metric of one server process, in a registry of its own."""

    def __init__(self):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.connections_ended = Counter(
            "greenbridge_connections",
            "WebSocket connections ended, by the close code sent (3xxx, 4xxx: application codes)",
            ["code"], registry=registry)
        self.handshake_rejections = Counter(
            "greenbridge_handshake_rejections", "Upgrade requests refused before any PHP started",
            ["reason"], registry=registry)
        self.spawn_failures = Counter(
            "greenbridge_php_spawn_failures", "PHP processes that could not be started",
            registry=registry)
        self.connect_back_seconds = Histogram(
            "greenbridge_php_connect_back_seconds", "Time from spawning PHP to its back-connection",
            buckets=_CONNECT_BACK_BUCKETS, registry=registry)
        self.connection_seconds = Histogram(
            "greenbridge_connection_duration_seconds", "How long WebSocket connections lasted",
            buckets=_DURATION_BUCKETS, registry=registry)
        self.backconnect_rejects = Counter(
            "greenbridge_backconnect_rejects",
            "Back-connections refused (unknown ID, malformed, too slow, dropped for newer ones)",
            registry=registry)
        self.connections_open = Gauge(
            "greenbridge_connections_open", "WebSocket connections open now", registry=registry)
        self.php_processes = Gauge(
            "greenbridge_php_processes", "PHP processes running now", registry=registry)
        self._traffic = _TrafficCollector()
        registry.register(self._traffic)
        self._channels = _ChannelsCollector()
        registry.register(self._channels)

    def watch(self, app):
        """Read the present state from the application at each scrape."""
        self.connections_open.set_function(lambda: len(app.connections))
        self.php_processes.set_function(
            lambda: sum(1 for connection in list(app.connections.values())
                        if connection.php_running))
        self._traffic.connections = app.connections
        self._channels.hub = app.channels
        self._channels.broker = app.broker

    def watch_certificate(self, holder):
        """With TLS: the served certificate's expiry (a tls.holder.CertificateHolder), at each scrape."""
        expiry = Gauge("greenbridge_tls_certificate_expiry_timestamp_seconds",
                       "When the certificate served to new handshakes expires (Unix time)",
                       registry=self.registry)
        expiry.set_function(lambda: holder.not_after.timestamp() if holder.served is not None
                            else float("nan"))

    def connection_ended(self, connection, duration):
        ending = connection.ending
        self.connections_ended.labels(
            code=close_code_label(ending.code if ending is not None else None)).inc()
        self.connection_seconds.observe(duration)
        self._traffic.add_closed(connection.traffic)

    def render(self):
        return generate_latest(self.registry)


def close_code_label(code):
    """The RFC's codes (below 3000) as they are; application codes, which clients
    choose freely (3000-4999), as "3xxx" or "4xxx", so clients cannot create series."""
    if code is None:
        return "none"
    if code >= 3000:
        return "%dxxx" % (code // 1000)
    return str(code)


class _TrafficCollector:
    """greenbridge_bytes_total: bytes of ended connections plus those of open ones."""

    def __init__(self):
        self.connections = {}
        self._closed_to_php = 0
        self._closed_to_client = 0

    def add_closed(self, traffic):
        self._closed_to_php += traffic.to_php
        self._closed_to_client += traffic.to_client

    def describe(self):
        return [CounterMetricFamily("greenbridge_bytes", "Payload bytes bridged",
                                    labels=["direction"])]

    def collect(self):
        to_php, to_client = self._closed_to_php, self._closed_to_client
        for connection in list(self.connections.values()):
            to_php += connection.traffic.to_php
            to_client += connection.traffic.to_client
        family = CounterMetricFamily("greenbridge_bytes", "Payload bytes bridged",
                                     labels=["direction"])
        family.add_metric(["to_php"], to_php)
        family.add_metric(["to_client"], to_client)
        yield family


class _ChannelsCollector:
    """The channels of this process (channels/hub.py) and whether their broker answers,
    read at each scrape."""

    def __init__(self):
        self.hub = None
        self.broker = None

    def collect(self):
        hub = self.hub
        if hub is None:
            return
        yield GaugeMetricFamily(
            "greenbridge_broker_up", "1 while the channels' broker (Redis, with --broker) "
            "answers, 0 while publications fail", value=self.broker.not_ready_because() is None)
        channels = hub.channels()
        for family, name, documentation, number in (
                (GaugeMetricFamily, "greenbridge_channels", "Channels with a subscriber now",
                 len(channels)),
                (GaugeMetricFamily, "greenbridge_channel_subscriptions",
                 "Subscriptions now (one connection to one channel)", sum(channels.values())),
                (GaugeMetricFamily, "greenbridge_channel_subscribers",
                 "Connections subscribed to at least one channel now", hub.num_subscribed),
                (CounterMetricFamily, "greenbridge_channel_publications",
                 "Publications to channels of this process", hub.publications),
                (CounterMetricFamily, "greenbridge_channel_deliveries",
                 "Publications queued for a subscriber", hub.deliveries),
                (CounterMetricFamily, "greenbridge_channel_subscribers_dropped_slow",
                 "Subscribers closed for falling --subscriber-queue-size behind",
                 hub.subscribers_too_slow)):
            yield family(name, documentation, value=number)


class MetricsChannel:
    """How the arbiter asks one worker for its metrics: a socket pair made before the fork.

    SOCK_SEQPACKET keeps each request and reply one record; a reply starts
    with its request's number, so a late answer to an abandoned scrape is
    recognised and dropped. Scrapes arriving together take turns: gevent lets
    only one greenlet wait on a socket at a time.
    """

    def __init__(self):
        self._arbiter_end, self._worker_end = socket.socketpair(socket.AF_UNIX,
                                                                socket.SOCK_SEQPACKET)
        self._request_numbers = itertools.count()
        self._turn = Semaphore()

    def answer_scrapes(self, metrics):
        """In the worker: serve scrape requests from a greenlet of their own."""
        def serve():
            while True:
                request = self._worker_end.recv(64)
                if not request:
                    return
                self._worker_end.sendall(request + b"\n" + metrics.render())

        gevent.spawn(serve)

    def scrape(self):
        """In the arbiter: the worker's metrics text, or None when it does not answer."""
        request = b"%d" % next(self._request_numbers)
        try:
            # The time limit includes waiting for the turn: a stuck worker
            # delays each scrape by it once, not once per scrape queued.
            with gevent.Timeout(_WORKER_SCRAPE_TIMEOUT), self._turn:
                self._arbiter_end.sendall(request)
                while True:
                    number, _, text = self._arbiter_end.recv(_SCRAPE_REPLY_MAX_BYTES).partition(b"\n")
                    if number == request:
                        return text.decode("utf-8")
        except (gevent.Timeout, OSError):
            return None


class WorkersMetrics:
    """One scrape over every worker: each worker's samples, labelled with its number."""

    def __init__(self, channels):
        self._channels = channels

    def render(self):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry)

    def collect(self):
        families = {}
        answering = 0
        for number, channel in enumerate(self._channels, start=1):
            text = channel.scrape()
            if text is None:
                log.warning("worker %d did not answer the metrics scrape", number)
                continue
            answering += 1
            for family in text_string_to_metric_families(text):
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    merged.add_sample(sample.name, dict(sample.labels, worker=str(number)),
                                      sample.value)
        workers = GaugeMetricFamily("greenbridge_workers_answering",
                                    "Workers whose numbers are in this scrape")
        workers.add_metric([], answering)
        return [workers, *families.values()]


_ADMIN_PATHS = ("/metrics", "/healthz", "/readyz")


class AdminApp:
    """The admin endpoints, as a WSGI application.

    ``metrics.render()`` gives the text of /metrics; ``readiness()`` returns
    None when ready, else why not (one line); ``api`` serves /api/<method>.
    """

    def __init__(self, metrics, readiness, api=None):
        self._metrics = metrics
        self._readiness = readiness
        self._api = api  # channels.api.ServerApi, when --api-key is set

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if self._api is not None and path.startswith(API_PATH_PREFIX):
            return self._api(environ, start_response)
        if path not in _ADMIN_PATHS:
            return _answer(start_response, "404 Not Found", b"/metrics, /healthz or /readyz\n")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", b"GET only\n")
        if path == "/metrics":
            return _answer(start_response, "200 OK", self._metrics.render(), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            return _answer(start_response, "200 OK", b"ok\n")
        if path == "/readyz":
            problem = self._readiness()
            if problem:
                return _answer(start_response, "503 Service Unavailable",
                               ("not ready: %s\n" % problem).encode())
        return _answer(start_response, "200 OK", b"ready\n")


def _answer(start_response, status, body, content_type="text/plain; charset=utf-8"):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
    return [body]
