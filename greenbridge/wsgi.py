"""greenbridge as a WSGI application, for gunicorn (or any gevent WSGI server).

    GREENBRIDGE_CONFIG=/etc/greenbridge/bridge.conf \
        gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker -w 2 \
        greenbridge.wsgi:application

``application`` is configured from the config file named by GREENBRIDGE_CONFIG
(and WSS_CONFIG_* variables, as the server is); with neither, or with a bad
setting, the host server stops with one line saying so. ``create_app(config_file,
**overrides)`` builds one in code. Each worker process opens its own
back-connection listener on its first WebSocket, after the fork, so
``tcp-port`` must be 0 (the default) with more than one worker, and the
connection limits count per worker.

``route_upgrades`` mounts greenbridge beside another WSGI application.
"""

import atexit
import logging
import os
import signal
import sys

import gevent

from greenbridge import cli
from greenbridge.app import BridgeApp
from greenbridge.backconnect import BackConnectListener
from greenbridge.config import CONFIG_ENV_PREFIX, Config, ConfigError
from greenbridge.head import without_body_for_head
from greenbridge.listening import BACKCONNECT, listen_for
from greenbridge.logs import configure_logging
from greenbridge.metrics import Metrics
from greenbridge.server import warn_about_withheld_variables
from greenbridge.shared import COUNTER_NAMES, SharedCounters
from greenbridge.upgrade import wants_websocket

try:
    # gunicorn (checked with 27.0) prints an AppImportError's message alone and
    # stops ("App failed to load"); any other error in loading the application it
    # logs with a traceback, from each worker.
    from gunicorn.errors import AppImportError as _HostLoadError
except ImportError:
    _HostLoadError = Exception

log = logging.getLogger("greenbridge.wsgi")

CONFIG_FILE_VARIABLE = "GREENBRIDGE_CONFIG"

# The settings of every bridge made in this process (see handshake_limits).
_bridge_configs = []


def create_app(config_file=None, **overrides):
    """A WSGI application bridging WebSocket upgrades to PHP.

    Keyword arguments are options by their long names (``script="chat.php"``,
    ``php_arg=["-d", "x"]``, ``trusted_proxy="10.0.0.0/8"``) and win over the
    environment and the config file. Bad settings raise ConfigError.
    """
    argv = ["-c", config_file] if config_file else []
    for name, value in overrides.items():
        argv += _option_arguments(name, value)
    config = cli.load_config(argv)
    if not logging.getLogger().handlers:
        # The host server left logging alone: greenbridge's lines go to stderr.
        configure_logging(config.log_level, config.log_format)
    warn_about_withheld_variables(config)
    return ProcessLocalBridge(config)


def _option_arguments(name, value):
    flag = "--" + name.replace("_", "-")
    if value is True:
        return [flag]
    if value is False or value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [argument for item in value for argument in (flag, str(item))]
    return [flag, str(value)]


class ProcessLocalBridge:
    """The WSGI callable: one BridgeApp per process, made on first use.

    A pre-forking server may build the application before it forks (gunicorn
    --preload); sockets, counters and PHP processes must belong to the worker
    that uses them, so each process makes its own on its first request.
    """

    def __init__(self, config):
        self.config = config
        self._app = None
        self._pid = None
        _bridge_configs.append(config)

    def __call__(self, environ, start_response):
        return self._app_of_this_process()(environ, start_response)

    def _app_of_this_process(self):
        if self._pid != os.getpid():
            self._app = without_body_for_head(self._make_app())
            self._pid = os.getpid()
        return self._app

    def _make_app(self):
        config = self.config
        metrics = Metrics()
        backconnect = BackConnectListener(listen_for(BACKCONNECT, config.tcp_bind, config.tcp_port),
                                          config.write_buffer_size, config.max_processes,
                                          metrics)
        backconnect.start()
        app = BridgeApp(config, backconnect, SharedCounters(COUNTER_NAMES, 1), metrics)
        # The host server may end this process with connections open; their
        # PHP process groups must not outlive it.
        atexit.register(app.kill_all_processes)
        _drain_on_sigterm(app)
        log.info("greenbridge WSGI application in pid %d (PHP connects back to %s:%d); script %s",
                 os.getpid(), *backconnect.address, config.script)
        return app


def _drain_on_sigterm(app):
    """On the host server's graceful stop (SIGTERM), drain as the standalone server does.

    The host's own handler still runs; it stops accepting and waits for open
    requests (gunicorn: up to --graceful-timeout, which must exceed
    --shutdown-timeout + 2 x --php-kill-grace + 5 s for the 1001 closes to go out).
    """
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        if not app.draining:
            gevent.spawn(app.drain)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def handshake_limits():
    """(--max-pending-handshakes, --handshake-timeout) for a server in front of this
    process's bridges (gunicorn_worker): the strictest of theirs, the defaults if none.

    gunicorn has loaded the application, and so made its bridge, before its
    worker builds the server; the server cannot reach the bridge through a
    composed application (route_upgrades), hence this register.
    """
    configs = _bridge_configs or [Config]  # the class holds the defaults
    timeouts = [config.handshake_timeout for config in configs if config.handshake_timeout]
    return (min(config.max_pending_handshakes for config in configs), min(timeouts, default=0))


def route_upgrades(bridge, other_app, path_prefix=None):
    """WebSocket upgrades (under `path_prefix`, if given) to `bridge`, all else to `other_app`."""
    def dispatch(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if wants_websocket(environ) and (path_prefix is None or path.startswith(path_prefix)):
            return bridge(environ, start_response)
        return other_app(environ, start_response)

    return dispatch


def __getattr__(name):
    # ``application`` is built when first asked for, so importing this module
    # for create_app needs no GREENBRIDGE_CONFIG.
    if name == "application":
        global application
        application = _application_from_environment()
        return application
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def _application_from_environment():
    """create_app for the host server; a configuration it cannot run with raises
    ApplicationConfigError, one line for the user, not a traceback per worker."""
    config_file = os.environ.get(CONFIG_FILE_VARIABLE)
    try:
        if not config_file and not any(name.startswith(CONFIG_ENV_PREFIX) for name in os.environ):
            raise ConfigError("%s is not set: name the bridge's config file, e.g. "
                              "%s=conf/bridge.conf (or set %s* variables)"
                              % (CONFIG_FILE_VARIABLE, CONFIG_FILE_VARIABLE, CONFIG_ENV_PREFIX))
        return create_app(config_file)
    except ConfigError as error:
        _whole_lines_on_stderr()
        raise ApplicationConfigError("greenbridge.wsgi: %s" % error) from None


def _whole_lines_on_stderr():
    """The host prints our line with print(), one write for the text and one for
    the newline; workers failing at once would splice their lines together. With
    write_through off, stderr (line-buffered) sends each line in one write."""
    sys.stderr.flush()
    sys.stderr.reconfigure(write_through=False)


class ApplicationConfigError(ConfigError, _HostLoadError):
    """``application`` cannot be configured; the message is one line, for the user."""
