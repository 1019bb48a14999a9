"""The general options: listeners, PHP, limits, timeouts, logs, routes, origins.

Flags, short names, defaults and WSS_CONFIG_* names match the Rust bridge that
greenbridge replaces. The order here is the order of ``--help`` and of the
README's table.
"""

import argparse

from greenbridge import PHP_LIBRARY
from greenbridge.settings.declaration import Section, Setting
from greenbridge.settings.origins import origin_pattern
from greenbridge.settings.routes import parse_route
from greenbridge.settings.values import (
    DEFAULT_MAX_WRITE_BUFFER_SIZE, MAX_COUNT, MAX_HELD_BYTES, MAX_PAYLOAD_SIZE, MAX_READ_SIZE,
    MAX_RETRIES, MAX_SOCKET_BUFFER, PHP_ENV_MODES, RAW, at_most, choice_of, comma_separated,
    flattened, flattened_or_none, log_format, log_level, message_mode, name, network,
    non_negative_int, port, positive_int, seconds, subprotocol, worker_count)

_count = at_most(MAX_COUNT, positive_int)


class PrintPhpLibrary(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        print(PHP_LIBRARY)
        parser.exit(0)


GENERAL = Section("general", (
    Setting("ws_host", "-H --ws-host", env="WSS_CONFIG_WS_HOST", default="0.0.0.0",
            help="address the WebSocket server listens on"),
    Setting("ws_port", "-P --ws-port", env="WSS_CONFIG_WS_PORT", type=port, default=8080,
            help="port the WebSocket server listens on (0: any free port)",
            readme="its port (0: any free port, logged at start-up)"),
    Setting("tcp_bind", "-B --tcp-bind", env="WSS_CONFIG_TCP_BIND", default="127.0.0.1",
            help="address of the back-connection listener PHP connects to",
            readme="address of the back-connection listener"),
    Setting("tcp_port", "--tcp-port", env="WSS_CONFIG_TCP_PORT", type=port, default=0,
            help="port of the back-connection listener (0: ephemeral)",
            readme="its port (0: ephemeral; PHP is told the real one)"),
    Setting("php_executable", "-e --php-executable", env="WSS_CONFIG_PHP_EXECUTABLE",
            required=True, readme_default="required",
            help="PHP binary to run for each connection (a path or a name on PATH)",
            readme="PHP binary (path or name on PATH)"),
    Setting("script", "-s --script", env="WSS_CONFIG_SCRIPT", readme_default="required",
            help="PHP script run for each connection whose path has no --route "
                 "(required unless routes are given)",
            readme="PHP script run for each connection (for paths without a route; optional "
                   "when routes are given)"),
    Setting("php_args", "-a --php-arg", env="WSS_CONFIG_PHP_ARGS", action="append",
            help="extra argument passed to the script (repeatable; in the environment "
                 "or config file as a list: [a, b])",
            readme="extra script argument; as a list ``[a, b]`` in the environment and the "
                   "config file"),
    Setting("max_connections", "-M --max-connections", env="WSS_CONFIG_MAX_CONNECTIONS",
            type=_count, default=256,
            help="open WebSocket connections at most; more get HTTP 503",
            readme="open connections at most; more get HTTP 503"),
    Setting("max_processes", "-m --max-processes", env="WSS_CONFIG_MAX_PROCESSES",
            type=_count, default=64,
            help="PHP processes at most; more connections get HTTP 503",
            readme="PHP processes at most; more get HTTP 503"),
    Setting("connection_timeout", "-T --connection-timeout", env="WSS_CONFIG_CONNECTION_TIMEOUT",
            type=seconds, default=0.0,
            help="close a connection idle this many seconds with 1001 (0: never)",
            readme="seconds without a message either way before 1001 (0: never)"),
    Setting("php_timeout", "-t --php-timeout", env="WSS_CONFIG_PHP_TIMEOUT",
            type=seconds, default=0.0,
            help="end a PHP process after it ran this many seconds, close with 1001 (0: never)",
            readme="seconds a PHP process may run before 1001 (0: never)"),
    Setting("buffer_size", "-b --buffer-size", env="WSS_CONFIG_BUFFER_SIZE",
            type=at_most(MAX_READ_SIZE, positive_int), default=65536,
            help="bytes read from PHP at once; each read becomes one message",
            readme="bytes read from PHP at once (one message each)"),
    Setting("log_level", "-l --log-level", env="WSS_CONFIG_LOG_LEVEL", type=log_level,
            default="info", help="trace, debug, info, warn or error"),
    Setting("php_connect_timeout", "--php-connect-timeout",
            env="WSS_CONFIG_PHP_CONNECT_TIMEOUT", type=seconds, default=30.0,
            help="seconds PHP has to connect back before the client gets 1011",
            readme="seconds PHP has to connect back"),
    Setting("php_connect_retries", "--php-connect-retries",
            env="WSS_CONFIG_PHP_CONNECT_RETRIES",
            type=at_most(MAX_RETRIES, non_negative_int), default=3,
            help="new attempts after a spawn failed or PHP exited before connecting back",
            readme="new attempts when spawning fails or PHP exits first"),
    Setting("max_payload_size", "--max-payload-size", env="WSS_CONFIG_MAX_PAYLOAD_SIZE",
            type=at_most(MAX_PAYLOAD_SIZE, positive_int), default=16 * 1024 * 1024,
            help="largest client message in bytes; a larger one closes with 1009",
            readme="largest client message; larger closes with 1009"),
    Setting("write_buffer_size", "--write-buffer-size", env="WSS_CONFIG_WRITE_BUFFER_SIZE",
            type=at_most(MAX_SOCKET_BUFFER, positive_int), default=128 * 1024,
            help="kernel send buffer asked for on each client and PHP socket, in bytes",
            readme="kernel send buffer asked for on each socket"),
    # Unset (None), it follows --max-payload-size: see checks.py.
    Setting("max_write_buffer_size", "--max-write-buffer-size", env="WSS_CONFIG_MAX_WRITE_BUFFER",
            type=at_most(MAX_HELD_BYTES, positive_int),
            readme_default=str(DEFAULT_MAX_WRITE_BUFFER_SIZE),
            help="largest message in bytes the bridge holds for a slow reader, per connection "
                 "and direction; a larger one closes with 1009 (default: %d, or "
                 "--max-payload-size when that is larger)" % DEFAULT_MAX_WRITE_BUFFER_SIZE,
            readme="largest message held for a slow reader, per connection and direction; "
                   "larger closes with 1009 (unset: ``--max-payload-size`` when that is larger; "
                   "see `message size and memory`_)"),
    Setting("message_timeout", "--message-timeout", env="WSS_CONFIG_MESSAGE_TIMEOUT",
            type=seconds, default=60.0,
            help="seconds a client has to send a fragmented message, first frame to last; "
                 "then 1008 (0: no limit)"),
    Setting("shutdown_timeout", "--shutdown-timeout", env="WSS_CONFIG_SHUTDOWN_TIMEOUT",
            type=seconds, default=30.0,
            help="seconds open connections may finish after SIGTERM/SIGINT",
            readme="seconds connections may finish after SIGTERM"),
    Setting("php_kill_grace", "--php-kill-grace", env="WSS_CONFIG_PHP_KILL_GRACE",
            type=seconds, default=1.0,
            help="seconds between SIGTERM and SIGKILL for a PHP process",
            readme="seconds before SIGTERM, and again before SIGKILL"),
    Setting("log_format", "--log-format", env="WSS_CONFIG_LOG_FORMAT", type=log_format,
            default="text",
            help="text, or json (one object per line, the connection ID as a field)",
            readme="``text``, or ``json``: one object per line with ``time``, ``level``, "
                   "``logger``, ``message`` and ``connection_id`` when the line is about one"),
    Setting("trusted_proxies", "--trusted-proxy", env="WSS_CONFIG_TRUSTED_PROXIES",
            action="append", type=comma_separated(network, empty_means_none=True),
            value=flattened,
            help="address or CIDR of a reverse proxy whose X-Real-IP and X-Forwarded-* "
                 "headers are believed (repeatable or comma-separated)",
            readme="address or CIDR of a reverse proxy whose ``X-Real-IP``/``X-Forwarded-*`` "
                   "headers are believed; comma-separated list allowed"),
    Setting("php_env", "--php-env", env="WSS_CONFIG_PHP_ENV", type=choice_of(PHP_ENV_MODES),
            default="inherit",
            help="which variables of the server's environment PHP inherits: inherit (all but "
                 "WSS_CONFIG_*) or minimal (PATH, LANG, LC_*, TZ, HOME); never a secret "
                 "setting's value",
            readme="which variables of the server's environment PHP inherits: ``inherit`` (all "
                   "but ``WSS_CONFIG_*``) or ``minimal`` (``PATH``, ``LANG``, ``LC_*``, "
                   "``TZ``, ``HOME``); never a secret setting's value (see `The environment "
                   "given to PHP`_)"),
    Setting("pass_env", "--pass-env", env="WSS_CONFIG_PASS_ENV", action="append",
            type=comma_separated(name, empty_means_none=True),
            value=flattened_or_none,  # empty: not given
            help="variables PHP inherits: with --php-env inherit only these, with minimal "
                 "these as well (the WSS_* ones always; repeatable or comma-separated; "
                 "empty: not given)",
            readme="variables PHP inherits (comma-separated list allowed): with ``inherit`` "
                   "only these, with ``minimal`` these too"),
    Setting("admin_host", "--admin-host", env="WSS_CONFIG_ADMIN_HOST", default="127.0.0.1",
            help="address of the admin listener (/metrics, /healthz, /readyz)",
            readme="address of the admin listener (see Operations)"),
    Setting("admin_port", "--admin-port", env="WSS_CONFIG_ADMIN_PORT", type=port,
            readme_default="off",
            help="port of the admin listener (default: no admin listener; 0: any free port)",
            readme="its port: ``/metrics``, ``/healthz``, ``/readyz``"),
    Setting("dev_console", "--dev-console", env="WSS_CONFIG_DEV_CONSOLE", action="store_true",
            default=False,
            help="serve a browser test page for plain GET requests on the WebSocket port "
                 "(development only)",
            readme="serve a browser test page on plain GET requests (development only)"),
    Setting("workers", "--workers", env="WSS_CONFIG_WORKERS", type=worker_count, default=1,
            help="server processes sharing the port (auto: one per core); the limits stay "
                 "global; with a fixed --tcp-port, worker N listens on --tcp-port + N - 1",
            readme="server processes sharing the port; ``auto``: one per core (see Operations)"),
    Setting("message_mode", "--message-mode", env="WSS_CONFIG_MESSAGE_MODE", type=message_mode,
            default=RAW,
            help="how messages travel to and from PHP: raw (a byte stream), line (one line per "
                 "message) or framed (type, length, payload)",
            readme="``raw``, ``line`` or ``framed`` (see Message modes)"),
    Setting("routes", "--route", env="WSS_CONFIG_ROUTES", type=parse_route, action="append",
            help="PATH=SCRIPT[,mode=MODE][,subprotocol=NAME][,envelope]: a path with its own "
                 "script, and optionally its own mode and subprotocols; envelope: channel "
                 "publications as JSON {channel, data} (repeatable; in the environment or "
                 "config file as a JSON list)",
            readme="``PATH=SCRIPT[,mode=MODE][,subprotocol=NAME]...[,envelope]``; a JSON list "
                   "in the environment and config file"),
    Setting("subprotocols", "--subprotocol", env="WSS_CONFIG_SUBPROTOCOLS",
            type=comma_separated(subprotocol), action="append", value=flattened,
            help="subprotocol the bridge accepts, in order of preference (repeatable or "
                 "comma-separated; none: echo the client's first)",
            readme="subprotocol accepted, in order of preference; none: echo the client's "
                   "first offer; comma list allowed"),
    Setting("allow_origins", "--allow-origin", env="WSS_CONFIG_ALLOW_ORIGINS",
            type=comma_separated(origin_pattern), action="append", value=flattened,
            help="Origin allowed to connect: https://host[:port] or *.example.com (repeatable "
                 "or comma-separated; others get 403)",
            readme="Origin allowed: ``https://host[:port]`` or ``*.example.com``; others get "
                   "403; comma list allowed"),
    Setting("same_origin", "--same-origin", env="WSS_CONFIG_SAME_ORIGIN", action="store_true",
            default=False,
            help="allow browsers only from pages whose Origin matches the Host header",
            readme="allow only an Origin that matches ``Host``"),
    Setting("ping_interval", "--ping-interval", env="WSS_CONFIG_PING_INTERVAL", type=seconds,
            default=30.0, help="ping a client silent for this many seconds (0: never)",
            readme="ping a client silent this many seconds (0: never)"),
    Setting("ping_timeout", "--ping-timeout", env="WSS_CONFIG_PING_TIMEOUT", type=seconds,
            default=30.0,
            help="close with 1001 a client that does not answer a ping within this many seconds",
            readme="seconds to answer before close 1001"),
    Setting(None, "--php-lib", action=PrintPhpLibrary, nargs=0, readme_default="",
            help="print the path of Greenbridge.php, the PHP library, and exit",
            readme="print the path of ``Greenbridge.php`` and exit"),
    Setting("handshake_timeout", "--handshake-timeout", env="WSS_CONFIG_HANDSHAKE_TIMEOUT",
            type=seconds, default=10.0,
            help="seconds from accept to the 101 answer, TLS handshake included (0: no limit)"),
    Setting("max_pending_handshakes", "--max-pending-handshakes",
            env="WSS_CONFIG_MAX_PENDING_HANDSHAKES", type=_count, default=128,
            help="connections not upgraded yet, at most; past it the oldest is dropped",
            readme="connections not upgraded yet at most; past it the oldest is dropped"),
    Setting("max_connections_per_ip", "--max-connections-per-ip",
            env="WSS_CONFIG_MAX_CONNECTIONS_PER_IP",
            type=at_most(MAX_COUNT, non_negative_int), default=0,
            help="open connections per client address at most; more get HTTP 503 (0: no limit)",
            readme="open connections per client address; more get HTTP 503 (0: no limit)"),
))
