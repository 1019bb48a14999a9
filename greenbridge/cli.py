"""The command line: every flag with its environment variable and default, and main().

Flags, short names, defaults and WSS_CONFIG_* names match the Rust bridge that
greenbridge replaces. Precedence: flag > environment > config file > default.
"""

import os
import sys

import configargparse

from greenbridge import PHP_LIBRARY, __version__, modes
from greenbridge import config as cfg
from greenbridge.acme import settings as acme


class _OneLineErrorParser(configargparse.ArgParser):
    """Bad input ends start-up with one line and exit status 2, not a usage dump.

    It also knows which options are secret (see _adder).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.secrets_of = {}  # option's dest -> function giving the secret strings of its value

    def error(self, message):
        self.exit(2, "%s: error: %s\n" % (self.prog, message))

    def secret_values(self, options):
        """The strings the secret options hold, as parsed."""
        secrets = []
        for dest, secrets_of in self.secrets_of.items():
            value = getattr(options, dest)
            if value:
                # An empty string would be "in" every value and withhold them all.
                secrets.extend(secret for secret in secrets_of(value) if secret)
        return tuple(secrets)


def _adder(parser, container):
    """container.add_argument, which also takes secret=: True, or a function giving
    the secret strings of the option's parsed value. PHP never sees a secret, under
    any variable name (Config.php_base_environment): a new secret option is safe
    by being declared so here."""
    def add(*flags, secret=None, **kwargs):
        action = container.add_argument(*flags, **kwargs)
        if secret:
            parser.secrets_of[action.dest] = _whole_value if secret is True else secret
        return action
    return add


def _whole_value(value):
    return [value] if isinstance(value, str) else list(value)


def build_parser():
    parser = _OneLineErrorParser(
        prog="greenbridge",
        description="WebSocket server that gives every client its own PHP process.",
        args_for_setting_config_path=["-c", "--config"],
        config_arg_help_message="config file (key = value lines, keys are the long flag names)",
        formatter_class=configargparse.ArgumentDefaultsHelpFormatter,
    )
    add = _adder(parser, parser)
    add("-V", "--version", action="version", version="greenbridge " + __version__)

    add("-H", "--ws-host", env_var="WSS_CONFIG_WS_HOST", default="0.0.0.0",
        help="address the WebSocket server listens on")
    add("-P", "--ws-port", env_var="WSS_CONFIG_WS_PORT", type=cfg.port, default=8080,
        help="port the WebSocket server listens on (0: any free port)")
    add("-B", "--tcp-bind", env_var="WSS_CONFIG_TCP_BIND", default="127.0.0.1",
        help="address of the back-connection listener PHP connects to")
    add("--tcp-port", env_var="WSS_CONFIG_TCP_PORT", type=cfg.port, default=0,
        help="port of the back-connection listener (0: ephemeral)")

    add("-e", "--php-executable", env_var="WSS_CONFIG_PHP_EXECUTABLE", required=True,
        help="PHP binary to run for each connection (a path or a name on PATH)")
    add("-s", "--script", env_var="WSS_CONFIG_SCRIPT",
        help="PHP script run for each connection whose path has no --route "
             "(required unless routes are given)")
    add("-a", "--php-arg", env_var="WSS_CONFIG_PHP_ARGS", action="append",
        help="extra argument passed to the script (repeatable; in the environment "
             "or config file as a list: [a, b])")

    add("-M", "--max-connections", env_var="WSS_CONFIG_MAX_CONNECTIONS",
        type=cfg.at_most(cfg.MAX_COUNT, cfg.positive_int), default=256,
        help="open WebSocket connections at most; more get HTTP 503")
    add("-m", "--max-processes", env_var="WSS_CONFIG_MAX_PROCESSES",
        type=cfg.at_most(cfg.MAX_COUNT, cfg.positive_int), default=64,
        help="PHP processes at most; more connections get HTTP 503")
    add("-T", "--connection-timeout", env_var="WSS_CONFIG_CONNECTION_TIMEOUT",
        type=cfg.seconds, default=0.0,
        help="close a connection idle this many seconds with 1001 (0: never)")
    add("-t", "--php-timeout", env_var="WSS_CONFIG_PHP_TIMEOUT",
        type=cfg.seconds, default=0.0,
        help="end a PHP process after it ran this many seconds, close with 1001 (0: never)")
    add("-b", "--buffer-size", env_var="WSS_CONFIG_BUFFER_SIZE",
        type=cfg.at_most(cfg.MAX_READ_SIZE, cfg.positive_int), default=65536,
        help="bytes read from PHP at once; each read becomes one message")
    add("-l", "--log-level", env_var="WSS_CONFIG_LOG_LEVEL", type=cfg.log_level,
        default="info", help="trace, debug, info, warn or error")

    add("--php-connect-timeout", env_var="WSS_CONFIG_PHP_CONNECT_TIMEOUT",
        type=cfg.seconds, default=30.0,
        help="seconds PHP has to connect back before the client gets 1011")
    add("--php-connect-retries", env_var="WSS_CONFIG_PHP_CONNECT_RETRIES",
        type=cfg.at_most(cfg.MAX_RETRIES, cfg.non_negative_int), default=3,
        help="new attempts after a spawn failed or PHP exited before connecting back")
    # Framed mode writes each message's length in 4 bytes.
    add("--max-payload-size", env_var="WSS_CONFIG_MAX_PAYLOAD_SIZE",
        type=cfg.at_most(modes.MAX_FRAME_LENGTH, cfg.positive_int), default=16 * 1024 * 1024,
        help="largest client message in bytes; a larger one closes with 1009")
    add("--write-buffer-size", env_var="WSS_CONFIG_WRITE_BUFFER_SIZE",
        type=cfg.at_most(cfg.MAX_SOCKET_BUFFER, cfg.positive_int), default=128 * 1024,
        help="kernel send buffer asked for on each client and PHP socket, in bytes")
    add("--max-write-buffer-size", env_var="WSS_CONFIG_MAX_WRITE_BUFFER",
        type=cfg.at_most(cfg.MAX_HELD_BYTES, cfg.positive_int),
        help="largest message in bytes the bridge holds for a slow reader, per connection "
             "and direction; a larger one closes with 1009 (default: %d, or "
             "--max-payload-size when that is larger)" % cfg.DEFAULT_MAX_WRITE_BUFFER_SIZE)
    add("--message-timeout", env_var="WSS_CONFIG_MESSAGE_TIMEOUT",
        type=cfg.seconds, default=60.0,
        help="seconds a client has to send a fragmented message, first frame to last; "
             "then 1008 (0: no limit)")
    add("--shutdown-timeout", env_var="WSS_CONFIG_SHUTDOWN_TIMEOUT",
        type=cfg.seconds, default=30.0,
        help="seconds open connections may finish after SIGTERM/SIGINT")
    add("--php-kill-grace", env_var="WSS_CONFIG_PHP_KILL_GRACE",
        type=cfg.seconds, default=1.0,
        help="seconds between SIGTERM and SIGKILL for a PHP process")
    add("--log-format", env_var="WSS_CONFIG_LOG_FORMAT", type=cfg.log_format, default="text",
        help="text, or json (one object per line, the connection ID as a field)")

    add("--trusted-proxy", env_var="WSS_CONFIG_TRUSTED_PROXIES", action="append",
        type=cfg.comma_separated(cfg.network, empty_means_none=True), help="address or CIDR of a reverse proxy whose X-Real-IP and X-Forwarded-* "
             "headers are believed (repeatable or comma-separated)")
    add("--php-env", env_var="WSS_CONFIG_PHP_ENV", type=cfg.choice_of(cfg.PHP_ENV_MODES),
        default="inherit",
        help="which variables of the server's environment PHP inherits: inherit (all but "
             "WSS_CONFIG_*) or minimal (PATH, LANG, LC_*, TZ, HOME); never a secret setting's "
             "value")
    add("--pass-env", env_var="WSS_CONFIG_PASS_ENV", action="append",
        type=cfg.comma_separated(cfg.name, empty_means_none=True),
        help="variables PHP inherits: with --php-env inherit only these, with minimal "
             "these as well (the WSS_* ones always; repeatable or comma-separated; "
             "empty: not given)")
    add("--admin-host", env_var="WSS_CONFIG_ADMIN_HOST", default="127.0.0.1",
        help="address of the admin listener (/metrics, /healthz, /readyz)")
    add("--admin-port", env_var="WSS_CONFIG_ADMIN_PORT", type=cfg.port,
        help="port of the admin listener (default: no admin listener; 0: any free port)")
    add("--dev-console", env_var="WSS_CONFIG_DEV_CONSOLE", action="store_true",
        help="serve a browser test page for plain GET requests on the WebSocket port "
             "(development only)")
    add("--workers", env_var="WSS_CONFIG_WORKERS", type=cfg.worker_count, default=1,
        help="server processes sharing the port (auto: one per core); the limits stay "
             "global; with a fixed --tcp-port, worker N listens on --tcp-port + N - 1")

    add("--message-mode", env_var="WSS_CONFIG_MESSAGE_MODE", type=cfg.message_mode,
        default="raw", help="how messages travel to and from PHP: raw (a byte stream), "
                            "line (one line per message) or framed (type, length, payload)")
    add("--route", env_var="WSS_CONFIG_ROUTES", type=cfg.route, action="append",
        help="PATH=SCRIPT[,mode=MODE][,subprotocol=NAME]: a path with its own script, "
             "and optionally its own mode and subprotocols (repeatable; in the environment "
             "or config file as a JSON list)")
    add("--subprotocol", env_var="WSS_CONFIG_SUBPROTOCOLS",
        type=cfg.comma_separated(cfg.subprotocol), action="append",
        help="subprotocol the bridge accepts, in order of preference (repeatable or "
             "comma-separated; none: echo the client's first)")
    add("--allow-origin", env_var="WSS_CONFIG_ALLOW_ORIGINS",
        type=cfg.comma_separated(cfg.origin_pattern), action="append",
        help="Origin allowed to connect: https://host[:port] or *.example.com (repeatable "
             "or comma-separated; others get 403)")
    add("--same-origin", env_var="WSS_CONFIG_SAME_ORIGIN", action="store_true",
        help="allow browsers only from pages whose Origin matches the Host header")
    add("--ping-interval", env_var="WSS_CONFIG_PING_INTERVAL", type=cfg.seconds, default=30.0,
        help="ping a client silent for this many seconds (0: never)")
    add("--ping-timeout", env_var="WSS_CONFIG_PING_TIMEOUT", type=cfg.seconds, default=30.0,
        help="close with 1001 a client that does not answer a ping within this many seconds")
    add("--php-lib", action=_PrintPhpLibrary, nargs=0,
        help="print the path of Greenbridge.php, the PHP library, and exit")
    add("--handshake-timeout", env_var="WSS_CONFIG_HANDSHAKE_TIMEOUT",
        type=cfg.seconds, default=10.0,
        help="seconds from accept to the 101 answer, TLS handshake included (0: no limit)")
    add("--max-pending-handshakes", env_var="WSS_CONFIG_MAX_PENDING_HANDSHAKES",
        type=cfg.at_most(cfg.MAX_COUNT, cfg.positive_int), default=128,
        help="connections not upgraded yet, at most; past it the oldest is dropped")
    add("--max-connections-per-ip", env_var="WSS_CONFIG_MAX_CONNECTIONS_PER_IP",
        type=cfg.at_most(cfg.MAX_COUNT, cfg.non_negative_int), default=0,
        help="open connections per client address at most; more get HTTP 503 (0: no limit)")
    add("--tls-mode", env_var="WSS_CONFIG_TLS_MODE", type=cfg.choice_of(cfg.TLS_MODES),
        default="none", help="none (ws://), internal (self-signed), manual (--tls-cert/"
                             "--tls-key) or automate (ACME)")
    add("--tls-domain", env_var="WSS_CONFIG_TLS_DOMAINS", action="append",
        type=cfg.comma_separated(cfg.name),
        help="domain of the certificate, wildcards allowed (repeatable or comma-separated; "
             "default localhost)")
    add("--tls-key-type", env_var="WSS_CONFIG_TLS_KEY_TYPE",
        type=cfg.choice_of(cfg.TLS_KEY_TYPES),
        help="key type: " + ", ".join(cfg.TLS_KEY_TYPES) + " (default ed25519; p256 with "
             "--tls-mode automate)")
    add("--tls-cert", env_var="WSS_CONFIG_TLS_CERT",
        help="PEM certificate, a full chain allowed (manual mode)")
    add("--tls-key", env_var="WSS_CONFIG_TLS_KEY", help="PEM private key (manual mode)")
    add("--tls-client-auth", env_var="WSS_CONFIG_TLS_CLIENT_AUTH_MODE",
        type=cfg.choice_of(cfg.TLS_CLIENT_AUTH_MODES), default="none",
        help="client certificates: none, request, require, verify-if-given or "
             "require-and-verify")
    add("--tls-client-auth-ca", env_var="WSS_CONFIG_TLS_CLIENT_AUTH_CA",
        help="PEM CA bundle client certificates are verified against")
    add("--tls-ciphers", env_var="WSS_CONFIG_TLS_CIPHERS", action="append",
        help="allowed cipher suite, OpenSSL name, TLS 1.2 or 1.3 (repeatable, or a list "
             "separated by commas or colons; default: OpenSSL's)")
    add("--tls-curves", env_var="WSS_CONFIG_TLS_CURVES", action="append",
        help="allowed key-exchange group, in order of preference (repeatable, or a list "
             "separated by commas or colons; default: OpenSSL's)")
    add("--tls-alpn", env_var="WSS_CONFIG_TLS_ALPN", action="append",
        type=cfg.comma_separated(cfg.name, empty_means_none=True),
        help="ALPN protocol offered, e.g. http/1.1 (repeatable or comma-separated; "
             "default: no ALPN)")
    add("--tls-secrets-log", env_var="WSS_CONFIG_TLS_INSECURE_SECRETS_LOG",
        help="append TLS secrets to this file in NSS key log format (for Wireshark; "
             "insecure: debugging only)")
    add("--tls-min-version", env_var="WSS_CONFIG_TLS_MIN_VERSION",
        type=cfg.choice_of(cfg.TLS_VERSIONS), default="1.2", help="1.2 or 1.3")
    _add_acme_options(parser)
    return parser


def _add_acme_options(parser):
    """--tls-mode automate: certificates from an ACME CA (Let's Encrypt), renewed live."""
    group = parser.add_argument_group(
        "automatic certificates (--tls-mode automate)",
        "Obtain a certificate for every --tls-domain from an ACME CA, cache it in the state "
        "directory and renew it in the background. HTTP-01 (default) runs certbot's standalone "
        "server on --tls-http01-port; DNS-01 (set --tls-dns-provider) publishes TXT records.")
    add = _adder(parser, group)
    add("--tls-acme-directory", env_var="WSS_CONFIG_TLS_ACME_DIRECTORY",
        type=acme.acme_directory, default=acme.LETS_ENCRYPT_DIRECTORIES["production"],
        help="ACME directory URL; 'production' and 'staging' name Let's Encrypt's")
    add("--tls-email", env_var="WSS_CONFIG_TLS_EMAIL",
        help="contact address for the ACME account (expiry notices)")
    add("--tls-acme-state-dir", env_var="WSS_CONFIG_TLS_ACME_DIR", default="./acme-state",
        help="directory for the account, the cached certificate and certbot's files (0700)")
    add("--tls-force-acme", env_var="WSS_CONFIG_TLS_FORCE_AUTOMATE", action="store_true",
        help="obtain a new certificate at start-up even when the cached one is good")
    add("--tls-renewal-window-ratio", env_var="WSS_CONFIG_TLS_RENEWAL_WINDOW_RATIO",
        type=acme.renewal_ratio, default=0.33,
        help="renew when less than this fraction of the certificate's lifetime remains")
    add("--tls-renewal-check-interval", env_var="WSS_CONFIG_TLS_RENEWAL_CHECK_INTERVAL",
        type=acme.positive_seconds, default=86400.0,
        help="seconds between renewal checks")
    add("--tls-acme-ca-bundle", env_var="WSS_CONFIG_TLS_ACME_CA_BUNDLE",
        help="PEM CA bundle to trust for the ACME server's own HTTPS (default: the system's)")
    add("--tls-eab-key-id", env_var="WSS_CONFIG_TLS_EAB_KEY_ID",
        help="external account binding key ID, for CAs that need one")
    add("--tls-eab-mac-key", env_var="WSS_CONFIG_TLS_EAB_MAC_KEY", secret=True,
        help="external account binding MAC key (base64url)")
    add("--tls-http01-port", env_var="WSS_CONFIG_TLS_HTTP01_PORT", type=cfg.port, default=80,
        help="port certbot answers HTTP-01 challenges on (the CA connects to port 80)")
    add("--tls-http01-address", env_var="WSS_CONFIG_TLS_HTTP01_ADDRESS", default="",
        help="address certbot listens on for HTTP-01 (default: all)")
    add("--tls-dns-provider", env_var="WSS_CONFIG_TLS_DNS_PROVIDER", choices=acme.DNS_PROVIDERS,
        help="use DNS-01 and publish the TXT records with rfc2136 or exec (needed for "
             "wildcards)")
    add("--tls-dns-param", env_var="WSS_CONFIG_TLS_DNS_PARAMS", action="append",
        type=acme.dns_param, secret=acme.secret_dns_params,
        help="provider parameter key=value (repeatable; as a list [a=1, b=2] in the "
             "environment or config file)")
    add("--tls-resolvers", env_var="WSS_CONFIG_TLS_RESOLVERS", action="append",
        type=acme.resolver_list,
        help="DNS servers (host[:port], comma-separated) checked for the TXT records "
             "before validation (default: the system's)")
    add("--tls-propagation-timeout", env_var="WSS_CONFIG_TLS_PROPAGATION_TIMEOUT",
        type=acme.positive_seconds, default=120.0,
        help="seconds to wait for the TXT records to appear at the resolvers")


class _PrintPhpLibrary(configargparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        print(PHP_LIBRARY)
        parser.exit(0)


def parse_config(argv=None, environment=None):
    """Parse flags, environment and config file into a Config; exit 2 on bad input."""
    try:
        return load_config(argv, environment)
    except cfg.ConfigError as error:
        build_parser().error(str(error))


def load_config(argv=None, environment=None):
    """Like parse_config, but bad input raises ConfigError (for greenbridge.wsgi)."""
    environment = dict(os.environ if environment is None else environment)
    parser = build_parser()
    parser.error = _raise_config_error
    options = parser.parse_args(args=argv, env_vars=environment)
    return cfg.build_config(options, environment, parser.secret_values(options))


def _raise_config_error(message):
    raise cfg.ConfigError(message)


def main(argv=None):
    config = parse_config(argv)
    # Imported late: the server module needs gevent's monkey-patching, which
    # the entry points apply before anything else is imported.
    from greenbridge import server
    from greenbridge.logs import configure_logging

    configure_logging(config.log_level, config.log_format)
    sys.exit(server.run(config))
