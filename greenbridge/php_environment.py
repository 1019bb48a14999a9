"""The contract with PHP: every WSS_* variable a PHP process gets, declared once.

Each entry of ``VARIABLES`` names a variable, says where its value comes from
and what it holds (written as the README shows it), and reads it from one
connection's ``ConnectionFacts``. ``build_environment`` gives PHP exactly
those, on top of what it inherits of the server's own environment
(``inherited_environment``: --php-env, --pass-env, secrets withheld).

The README's table ("The environment given to PHP") is generated from these
entries by scripts/php_environment_table.py, and a test fails when the two
disagree; Greenbridge.php is tested against them (tests/test_php_environment.py).

Every value is text: numbers in decimal, flags ``1``; an entry that reads
None for a connection is left out (a header not sent, ws:// without TLS).
"""

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Tuple

from greenbridge import PHP_LIBRARY
from greenbridge.config import CONFIG_ENV_PREFIX

if TYPE_CHECKING:
    from greenbridge.request import Request
    from greenbridge.routing import Endpoint

# What the bridge tells PHP; the server's own WSS_* variables are passed too,
# also with --pass-env (those of CONFIG_ENV_PREFIX, its settings, never are).
PREFIX = "WSS_"
# systemd's channel to the server itself, not to its PHP processes.
SERVER_ONLY_VARIABLES = ("NOTIFY_SOCKET",)
# --php-env minimal: what a program needs to run and speak the locale, no more.
MINIMAL_VARIABLES = ("PATH", "LANG", "TZ", "HOME")
MINIMAL_VARIABLE_PREFIXES = ("LC_",)

# What a script must do before anything else, with these variables.
CONNECT_BACK = ("WSS_TCP_HOST", "WSS_TCP_PORT", "WSS_CONNECTION_ID")
CONNECT_BACK_HINT = ("a script must first connect to %s:%s and send %s and a newline "
                     "(Greenbridge\\Connection::connect() does)" % CONNECT_BACK)


@dataclass(frozen=True)
class ConnectionFacts:
    """What every WSS_* value of one connection is read from."""
    request: "Request"
    connection_id: str
    back_connect_address: Tuple[str, int]  # the listener PHP connects back to
    endpoint: "Endpoint"  # its message mode and subprotocol


@dataclass(frozen=True)
class Variable:
    name: str
    source: str  # where the value comes from
    meaning: str  # what it holds and how it is written (reStructuredText, for the README)
    read: Callable[[ConnectionFacts], Optional[str]]  # None: not given to this connection


def _header(header, name):
    """A request header that PHP also gets as a variable of its own."""
    return Variable(name, "request header", "the ``%s`` header, only when sent" % header,
                    lambda facts: facts.request.headers.get(header.lower()))


def _certificate(name, meaning, read):
    """A fact about the client's certificate, given only when it presented one."""
    def read_if_presented(facts):
        certificate = facts.request.client_certificate
        return None if certificate is None else read(certificate)
    return Variable(name, "client certificate", meaning, read_if_presented)


# In the order PHP's environment lists them.
VARIABLES = (
    Variable("WSS_ENABLED", "greenbridge", "``1``", lambda facts: "1"),
    Variable("WSS_CONNECTION_ID", "connection",
             "the ID to send back when connecting back, a UUID v4",
             lambda facts: facts.connection_id),
    Variable("WSS_CLIENT_IP", "peer or trusted proxy",
             "the client's IP address; from a ``--trusted-proxy``: ``X-Real-IP``, else the "
             "right-most ``X-Forwarded-For`` entry that is not a trusted proxy",
             lambda facts: facts.request.client_ip),
    Variable("WSS_CLIENT_PORT", "peer or trusted proxy",
             "the client's port; ``0`` when a trusted proxy named the client",
             lambda facts: str(facts.request.client_port)),
    Variable("WSS_SERVER_HOST", "socket or trusted proxy",
             "the local address the client connected to; from a trusted proxy: the host of "
             "``X-Forwarded-Host``",
             lambda facts: facts.request.server_host),
    Variable("WSS_SERVER_PORT", "socket or trusted proxy",
             "the local port the client connected to; from a trusted proxy: "
             "``X-Forwarded-Port``, else the port of ``X-Forwarded-Host``",
             lambda facts: str(facts.request.server_port)),
    Variable("WSS_REQUEST_URI", "request line", "path and query, e.g. ``/chat?room=1``",
             lambda facts: facts.request.uri),
    Variable("WSS_REQUEST_PATH", "request line", "the path, e.g. ``/chat``",
             lambda facts: facts.request.path),
    Variable("WSS_REQUEST_QUERY", "request line",
             "the query, e.g. ``room=1`` (empty when none)",
             lambda facts: facts.request.query),
    Variable("WSS_REQUEST_HEADERS", "request headers",
             "JSON object of all request headers, names lower-cased, values as sent (UTF-8 "
             "when they are, else each byte a latin-1 character)",
             lambda facts: json.dumps(facts.request.headers, ensure_ascii=False)),
    Variable("WSS_TCP_HOST", "back-connection", "the address to connect back to",
             lambda facts: facts.back_connect_address[0]),
    Variable("WSS_TCP_PORT", "back-connection",
             "its port (the real one, also with ``--tcp-port 0``)",
             lambda facts: str(facts.back_connect_address[1])),
    Variable("WSS_MESSAGE_MODE", "route or settings",
             "``raw``, ``line`` or ``framed``: the route's ``mode``, else ``--message-mode``",
             lambda facts: facts.endpoint.message_mode),
    Variable("WSS_PHP_LIB", "installation",
             "path of ``Greenbridge.php``, the PHP library (as ``--php-lib``)",
             # So a script finds the library wherever greenbridge is installed.
             lambda facts: PHP_LIBRARY),
    Variable("WSS_SUBPROTOCOL", "handshake",
             "the subprotocol agreed with the client (see ``--subprotocol``), only when "
             "there is one",
             lambda facts: facts.endpoint.subprotocol or None),
    _header("Sec-WebSocket-Protocol", "WSS_SEC_WEBSOCKET_PROTOCOL"),
    _header("Sec-WebSocket-Version", "WSS_SEC_WEBSOCKET_VERSION"),
    _header("Origin", "WSS_ORIGIN"),
    _header("User-Agent", "WSS_USER_AGENT"),
    _header("Host", "WSS_HOST"),
    _header("X-Forwarded-For", "WSS_X_FORWARDED_FOR"),
    _header("X-Real-IP", "WSS_X_REAL_IP"),
    Variable("WSS_TLS", "TLS",
             "``1`` on a wss:// connection, also when a WSGI server (gunicorn) ended TLS; "
             "absent on ws://",
             lambda facts: "1" if facts.request.tls else None),
    Variable("WSS_USER", "connection token",
             "the token's ``sub``, the user (empty: anonymous), only with a valid token",
             lambda facts: None if facts.request.token is None else facts.request.token.user),
    Variable("WSS_TOKEN_INFO", "connection token",
             "the token's ``info`` claim as JSON, only when it has one",
             lambda facts: _token_info(facts.request.token)),
    _certificate("WSS_CLIENT_CERT_SUBJECT",
                 "its subject (RFC 4514, e.g. ``O=Example,CN=alice``); this and the five "
                 "below only when the client presented a certificate",
                 lambda certificate: certificate.subject),
    _certificate("WSS_CLIENT_CERT_ISSUER", "its issuer (RFC 4514)",
                 lambda certificate: certificate.issuer),
    _certificate("WSS_CLIENT_CERT_SERIAL", "its serial number, upper-case hex",
                 lambda certificate: "%X" % certificate.serial_number),
    _certificate("WSS_CLIENT_CERT_FINGERPRINT", "SHA-256 of its DER form, lower-case hex",
                 lambda certificate: hashlib.sha256(certificate.der).hexdigest()),
    _certificate("WSS_CLIENT_CERT_VERIFIED",
                 "``1`` if it verified against ``--tls-client-auth-ca``, else ``0``",
                 lambda certificate: "1" if certificate.verified else "0"),
    _certificate("WSS_CLIENT_CERT_PEM", "the certificate, PEM",
                 lambda certificate: certificate.pem),
)


def _token_info(token):
    if token is None or token.info is None:
        return None
    # ASCII: a lone surrogate JSON allows could not be put in an environment.
    return json.dumps(token.info)


def build_environment(inherited, request, connection_id, back_connect_address, endpoint):
    """The environment PHP sees: what it inherits (inherited_environment) plus the WSS_* values."""
    facts = ConnectionFacts(request, connection_id, back_connect_address, endpoint)
    environment = dict(inherited)
    for variable in VARIABLES:
        value = variable.read(facts)
        if value is not None:
            environment[variable.name] = value
    return environment


# -- what PHP inherits of the server's environment -------------------------------


def inherited_environment(settings):
    """What PHP inherits of the server's environment (settings.base_environment), once
    for all connections: chosen by --php-env and --pass-env, without secrets."""
    return {name: value for name, value in settings.base_environment.items()
            if _inherited(name, settings) and not _holds_secret(value, settings)}


def withheld_for_secrets(settings):
    """Names PHP would inherit but does not: their values hold a secret setting."""
    return sorted(name for name, value in settings.base_environment.items()
                  if _inherited(name, settings) and _holds_secret(value, settings))


def _inherited(name, settings):
    if name.startswith(CONFIG_ENV_PREFIX) or name in SERVER_ONLY_VARIABLES:
        return False
    if name.startswith(PREFIX) or name in (settings.pass_env or ()):
        return True
    if settings.php_env == "minimal":
        return name in MINIMAL_VARIABLES or name.startswith(MINIMAL_VARIABLE_PREFIXES)
    return settings.pass_env is None  # inherit: --pass-env, when given, is the whole list


def _holds_secret(value, settings):
    # Under any name: a secret given as a flag may also sit in some variable.
    return any(secret in value for secret in settings.secret_values)
