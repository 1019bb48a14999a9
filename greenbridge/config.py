"""The validated, immutable settings object, and the value checks behind it.

Every check here raises ``ConfigError`` with a message that names the option
and the problem, so start-up can fail with one clear line.
"""

import argparse
import ipaddress
import os
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping, Optional, Tuple

from greenbridge import modes, origin, routing
# As a module: acme/settings.py imports this one for ConfigError.
from greenbridge.acme import settings as acme_settings
from greenbridge.tls import KEY_TYPES as TLS_KEY_TYPES
from greenbridge.websocket import is_token

LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
LOG_FORMATS = ("text", "json")
TLS_MODES = ("none", "internal", "manual", "automate")
TLS_CLIENT_AUTH_MODES = ("none", "request", "require", "verify-if-given", "require-and-verify")
TLS_VERSIONS = ("1.2", "1.3")

# Variables that configure the bridge itself; they may hold secrets, so PHP
# never inherits them.
CONFIG_ENV_PREFIX = "WSS_CONFIG_"
# What the bridge tells PHP; always passed, also with --pass-env.
PHP_ENV_PREFIX = "WSS_"
# systemd's channel to the server itself, not to its PHP processes.
SERVER_ONLY_VARIABLES = ("NOTIFY_SOCKET",)
# --php-env: inherit (the Rust bridge's way: everything but the above) or
# minimal (what a program needs to run and speak the locale, no more).
PHP_ENV_MODES = ("inherit", "minimal")
MINIMAL_PHP_VARIABLES = ("PATH", "LANG", "TZ", "HOME")
MINIMAL_PHP_VARIABLE_PREFIXES = ("LC_",)
# The Rust bridge's default; unset, --max-write-buffer-size grows to --max-payload-size.
DEFAULT_MAX_WRITE_BUFFER_SIZE = 16 * 1024 * 1024


class ConfigError(ValueError):
    """A setting has a value the bridge cannot run with."""


@dataclass(frozen=True)
class Config:
    php_executable: str
    script: Optional[str]  # None: only --route paths are served
    ws_host: str = "0.0.0.0"
    ws_port: int = 8080
    tcp_bind: str = "127.0.0.1"
    tcp_port: int = 0
    php_args: Tuple[str, ...] = ()
    max_connections: int = 256
    max_processes: int = 64
    connection_timeout: float = 0.0
    php_timeout: float = 0.0
    buffer_size: int = 65536
    log_level: str = "info"
    php_connect_timeout: float = 30.0
    php_connect_retries: int = 3
    max_payload_size: int = 16 * 1024 * 1024
    write_buffer_size: int = 128 * 1024
    max_write_buffer_size: int = DEFAULT_MAX_WRITE_BUFFER_SIZE
    message_timeout: float = 60.0
    shutdown_timeout: float = 30.0
    php_kill_grace: float = 1.0
    log_format: str = "text"
    # Peers whose X-Real-IP / X-Forwarded-* headers are believed.
    trusted_proxies: Tuple[ipaddress._BaseNetwork, ...] = ()
    # Which of the server's variables PHP inherits: see php_base_environment.
    php_env: str = "inherit"
    pass_env: Optional[Tuple[str, ...]] = None  # None: not given
    admin_host: str = "127.0.0.1"
    admin_port: Optional[int] = None
    dev_console: bool = False
    workers: int = 1
    message_mode: str = modes.RAW
    subprotocols: Tuple[str, ...] = ()
    routes: Tuple[routing.Route, ...] = ()
    allow_origins: Tuple[str, ...] = ()
    same_origin: bool = False
    ping_interval: float = 30.0
    ping_timeout: float = 30.0
    handshake_timeout: float = 10.0
    max_pending_handshakes: int = 128
    max_connections_per_ip: int = 0
    tls_mode: str = "none"
    tls_domains: Tuple[str, ...] = ("localhost",)
    tls_key_type: str = "ed25519"
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_client_auth: str = "none"
    tls_client_auth_ca: Optional[str] = None
    tls_ciphers: Tuple[str, ...] = ()
    tls_curves: Tuple[str, ...] = ()
    tls_alpn: Tuple[str, ...] = ()
    tls_secrets_log: Optional[str] = None
    tls_min_version: str = "1.2"
    # --tls-mode automate: everything the ACME side needs, checked.
    acme: Optional["acme_settings.AcmeSettings"] = None
    # The values of every setting declared secret (cli.py): PHP never sees
    # them, whatever the variable that holds them is called.
    secret_values: Tuple[str, ...] = field(default=(), repr=False)
    # The server's own environment, captured once at start-up.
    base_environment: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def max_message_size(self):
        """The largest message either way: the bridge holds a whole message while its reader
        is slow, so --max-write-buffer-size caps it as --max-payload-size does."""
        return min(self.max_payload_size, self.max_write_buffer_size)

    @cached_property
    def php_base_environment(self):
        """What PHP inherits of the server's environment (before the WSS_* values)."""
        return {name: value for name, value in self.base_environment.items()
                if self._inherited_by_php(name) and not self._holds_secret(value)}

    @property
    def variables_withheld_for_secrets(self):
        """Names PHP would inherit but does not: their values hold a secret setting."""
        return sorted(name for name, value in self.base_environment.items()
                      if self._inherited_by_php(name) and self._holds_secret(value))

    def _inherited_by_php(self, name):
        if name.startswith(CONFIG_ENV_PREFIX) or name in SERVER_ONLY_VARIABLES:
            return False
        if name.startswith(PHP_ENV_PREFIX) or name in (self.pass_env or ()):
            return True
        if self.php_env == "minimal":
            return name in MINIMAL_PHP_VARIABLES or name.startswith(MINIMAL_PHP_VARIABLE_PREFIXES)
        return self.pass_env is None  # inherit: --pass-env, when given, is the whole list

    def _holds_secret(self, value):
        return any(secret in value for secret in self.secret_values)

    @property
    def notify_socket(self):
        """systemd's notification socket ("" when not run by systemd with Type=notify)."""
        return self.base_environment.get("NOTIFY_SOCKET", "")

    def is_trusted_proxy(self, address):
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(peer in network for network in self.trusted_proxies)


# The largest values accepted. Past them a number is a typo or a
# misunderstanding, and some used to fail on every connection instead of at
# start-up (a MemoryError for each read, setsockopt refusing a number over a C int).
MiB = 2 ** 20
GiB = 2 ** 30
MAX_READ_SIZE = 16 * MiB  # --buffer-size: allocated for every read from PHP
# --write-buffer-size goes to setsockopt, which takes a C int; the kernel caps
# it at net.core.wmem_max anyway.
MAX_SOCKET_BUFFER = GiB
MAX_HELD_BYTES = GiB  # --max-write-buffer-size, per connection and direction
MAX_COUNT = 1000000  # connections, processes, pending handshakes
MAX_RETRIES = 1000
MAX_WORKERS = 1024
# Any timeout or interval. gevent's libuv loop counts in integer milliseconds
# and overflows near 1.8e16 seconds; 0 already means "never" where it can.
MAX_SECONDS = 365 * 24 * 3600

# Argument types. argparse turns their ValueError into "argument --x: invalid
# <name> value: '...'"; the names below read well in that sentence.

def _integer_type(name, minimum, maximum=None):
    def parse(text):
        number = int(text)
        if number < minimum or (maximum is not None and number > maximum):
            raise ValueError(text)
        return number

    parse.__name__ = name
    return parse


port = _integer_type("port (0-65535)", 0, 65535)
positive_int = _integer_type("positive integer", 1)
non_negative_int = _integer_type("non-negative integer", 0)


def at_most(maximum, number_type):
    """number_type, refusing values over `maximum` with a message that says so."""
    def parse(text):
        return not_over(maximum, text, number_type(text))

    parse.__name__ = number_type.__name__
    return parse


def not_over(maximum, text, number):
    if number > maximum:
        raise argparse.ArgumentTypeError("%s is over the maximum, %d" % (text.strip(), maximum))
    return number


def _non_negative_seconds(text):
    number = float(text)
    if not number >= 0 or number == float("inf"):
        raise ValueError(text)
    return number


_non_negative_seconds.__name__ = "number of seconds"
seconds = at_most(MAX_SECONDS, _non_negative_seconds)


def log_level(text):
    level = text.strip().lower()
    if level == "warning":
        level = "warn"
    if level not in LOG_LEVELS:
        raise ValueError(text)
    return level


log_level.__name__ = "log level (trace, debug, info, warn, error)"


def log_format(text):
    if text.strip().lower() not in LOG_FORMATS:
        raise ValueError(text)
    return text.strip().lower()


log_format.__name__ = "log format (text, json)"


def comma_list(text):
    """'A, B,C' -> ('A', 'B', 'C'); empty entries dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def comma_separated(item_type, empty_means_none=False):
    """The type of a list option (action="append"): every value may hold several
    items, comma-separated, so that 'a,b' in an environment variable or the config
    file means two items, as '[a, b]' does.

    An empty value is refused unless `empty_means_none`: for --allow-origin, say,
    no items would mean "any origin", the opposite of what was meant.
    """
    def parse(text):
        items = comma_list(text)
        if not items and not empty_means_none:
            raise ValueError(text)
        parsed = []
        for item in items:
            try:
                parsed.append(item_type(item))
            except ValueError:
                # argparse would quote the whole value; name the item at fault.
                raise argparse.ArgumentTypeError("invalid %s value: %r"
                                                 % (item_type.__name__, item)) from None
        return tuple(parsed)

    parse.__name__ = item_type.__name__
    return parse


def flattened(groups):
    """The values of a comma_separated option, repeated or not, as one tuple."""
    return tuple(item for group in groups or () for item in group)


def name(text):
    return text


name.__name__ = "name"


def network(text):
    return ipaddress.ip_network(text, strict=False)


network.__name__ = "IP address or CIDR"


_workers = at_most(MAX_WORKERS, positive_int)


def worker_count(text):
    if text.strip().lower() == "auto":
        return min(os.cpu_count() or 1, MAX_WORKERS)
    return _workers(text)


worker_count.__name__ = "worker count (a positive integer or auto)"


def choice_of(choices):
    def parse(text):
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(text)
        return value

    parse.__name__ = "choice (%s)" % ", ".join(choices)
    return parse


def _names(values):
    """Repeated flag values, each of which may also hold a ':' or ',' separated list."""
    names = []
    for value in values or ():
        names.extend(name.strip() for name in value.replace(",", ":").split(":") if name.strip())
    return tuple(names)


def _check_tls(options):
    if options.tls_mode == "manual":
        for flag, path in (("--tls-cert", options.tls_cert), ("--tls-key", options.tls_key)):
            if not path:
                raise ConfigError("--tls-mode manual needs %s" % flag)
    elif options.tls_cert or options.tls_key:
        raise ConfigError("--tls-cert and --tls-key need --tls-mode manual")
    if options.tls_client_auth in ("verify-if-given", "require-and-verify") \
            and not options.tls_client_auth_ca:
        raise ConfigError("--tls-client-auth %s needs --tls-client-auth-ca"
                          % options.tls_client_auth)
    if options.tls_client_auth_ca:
        _existing_file("--tls-client-auth-ca", options.tls_client_auth_ca)


def message_mode(text):
    mode = text.strip().lower()
    if mode not in modes.MODES:
        raise ValueError(text)
    return mode


message_mode.__name__ = "message mode (raw, line, framed)"


def route(text):
    return routing.parse_route(text)


route.__name__ = "route (PATH=SCRIPT[,mode=MODE][,subprotocol=NAME])"


def origin_pattern(text):
    origin.OriginPattern(text)
    return text.strip().lower()


origin_pattern.__name__ = "origin (https://host[:port] or *.example.com)"


def subprotocol(text):
    name = text.strip()
    if not is_token(name):
        raise ValueError(text)
    return name


subprotocol.__name__ = "subprotocol name (an HTTP token)"


def build_config(options, environment, secret_values=()):
    """Check what argparse cannot check alone and freeze the result.

    `secret_values`: the strings the settings declared secret hold.
    """
    php_executable = _resolve_executable(options.php_executable)
    routes = tuple(options.route or ())
    if not options.script and not routes:
        raise ConfigError("--script is required (or at least one --route)")
    script = _existing_file("--script", options.script) if options.script else None
    for each in routes:
        _existing_file("--route %s" % each.path, each.script)
    if options.ping_interval and not options.ping_timeout:
        raise ConfigError("--ping-timeout must be over 0 when --ping-interval is set")
    max_write_buffer_size = options.max_write_buffer_size
    if max_write_buffer_size is None:  # unset: it refuses nothing --max-payload-size allows
        max_write_buffer_size = max(DEFAULT_MAX_WRITE_BUFFER_SIZE, options.max_payload_size)
    if options.buffer_size > max_write_buffer_size:
        raise ConfigError(
            "--buffer-size (%d) must not exceed --max-write-buffer-size (%d)"
            % (options.buffer_size, max_write_buffer_size))
    if options.tcp_port and options.tcp_port + options.workers - 1 > 65535:
        raise ConfigError("--tcp-port %d: workers 1 to %d listen on %d to %d, past 65535"
                          % (options.tcp_port, options.workers, options.tcp_port,
                             options.tcp_port + options.workers - 1))
    _check_tls(options)
    domains = flattened(options.tls_domain)
    if options.tls_mode != "automate":
        domains = domains or ("localhost",)  # what a self-signed certificate is for
    # CAs issue no Ed25519 certificates: automate defaults to P-256.
    key_type = options.tls_key_type or ("p256" if options.tls_mode == "automate" else "ed25519")
    acme = None
    if options.tls_mode == "automate":
        # PHP inherits the server's environment; certbot and DNS hooks get it
        # too, minus greenbridge's own settings (a TSIG secret among them).
        acme = acme_settings.build_acme_settings(options, domains, key_type, {
            name: value for name, value in environment.items()
            if not name.startswith("WSS_CONFIG_")})
    return Config(
        php_executable=php_executable,
        script=script,
        ws_host=options.ws_host,
        ws_port=options.ws_port,
        tcp_bind=options.tcp_bind,
        tcp_port=options.tcp_port,
        php_args=tuple(options.php_arg or ()),
        max_connections=options.max_connections,
        max_processes=options.max_processes,
        connection_timeout=options.connection_timeout,
        php_timeout=options.php_timeout,
        buffer_size=options.buffer_size,
        log_level=options.log_level,
        php_connect_timeout=options.php_connect_timeout,
        php_connect_retries=options.php_connect_retries,
        max_payload_size=options.max_payload_size,
        write_buffer_size=options.write_buffer_size,
        max_write_buffer_size=max_write_buffer_size,
        message_timeout=options.message_timeout,
        shutdown_timeout=options.shutdown_timeout,
        php_kill_grace=options.php_kill_grace,
        log_format=options.log_format,
        trusted_proxies=flattened(options.trusted_proxy),
        php_env=options.php_env,
        pass_env=flattened(options.pass_env) or None,  # empty: not set
        admin_host=options.admin_host,
        admin_port=options.admin_port,
        dev_console=options.dev_console,
        workers=options.workers,
        message_mode=options.message_mode,
        subprotocols=flattened(options.subprotocol),
        routes=routes,
        allow_origins=flattened(options.allow_origin),
        same_origin=options.same_origin,
        ping_interval=options.ping_interval,
        ping_timeout=options.ping_timeout,
        handshake_timeout=options.handshake_timeout,
        max_pending_handshakes=options.max_pending_handshakes,
        max_connections_per_ip=options.max_connections_per_ip,
        tls_mode=options.tls_mode,
        tls_domains=domains,
        tls_key_type=key_type,
        tls_cert=options.tls_cert,
        tls_key=options.tls_key,
        tls_client_auth=options.tls_client_auth,
        tls_client_auth_ca=options.tls_client_auth_ca,
        tls_ciphers=_names(options.tls_ciphers),
        tls_curves=_names(options.tls_curves),
        tls_alpn=flattened(options.tls_alpn),
        tls_secrets_log=options.tls_secrets_log,
        tls_min_version=options.tls_min_version,
        acme=acme,
        secret_values=tuple(value for value in secret_values if value),
        base_environment=dict(environment),
    )


def _resolve_executable(name):
    """The PHP binary's absolute path; a ConfigError that says what to do when there is none."""
    if not name:
        raise ConfigError("--php-executable is required")
    found = shutil.which(name)
    if found is not None:
        return found
    if os.sep not in name:  # looked up on PATH
        raise ConfigError("--php-executable: %r is not on PATH; install PHP's command-line "
                          "interpreter (Debian: apt install php-cli) or give the PHP binary's "
                          "full path" % name)
    if not os.path.exists(name):
        raise ConfigError("--php-executable: %r does not exist%s; give the PHP binary's path "
                          "(command -v php prints it)" % (name, _relative_to_here(name)))
    if os.path.isdir(name):
        raise ConfigError("--php-executable: %r is a directory; give the PHP binary's path" % name)
    raise ConfigError("--php-executable: %r is not executable (chmod +x it, or give the PHP "
                      "binary's path)" % name)


def _existing_file(option, path):
    if not path:
        raise ConfigError("%s is required" % option)
    if not os.path.isfile(path):
        raise ConfigError("%s: %r is not a file%s" % (option, path, _relative_to_here(path)))
    if not os.access(path, os.R_OK):
        raise ConfigError("%s: %r is not readable by this user (uid %d); make it readable "
                          "(chmod a+r) or run greenbridge as a user who can read it"
                          % (option, path, os.getuid()))
    return os.path.abspath(path)


def _relative_to_here(path):
    """Where a relative path was looked for, said in an error: the directory greenbridge
    started in, which is not the config file's."""
    if os.path.isabs(path):
        return ""
    return " (relative paths start at %s, the directory greenbridge started in)" % os.getcwd()
