"""The channel options: the server API's key, connection tokens, subscribe routes, queues.

What a token's algorithm needs (a secret or a public key of its family) and
where a subscribe route may be are checked across options in checks.py.
"""

import argparse
from urllib.parse import unquote, urlsplit

from greenbridge.settings.declaration import Section, Setting
from greenbridge.settings.routes import SubscribeRoute
from greenbridge.settings.values import (MAX_COUNT, MAX_HELD_BYTES, MAX_SECONDS, MiB, at_most,
                                         choice_of, non_negative_int, positive_int,
                                         positive_seconds, text_or_none)

# Connection tokens are JWTs signed with a shared secret (HMAC) or a private
# key whose public half greenbridge holds (RSA, ECDSA); "none" is never one.
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512")
# Each ECDSA algorithm goes with one curve (RFC 7518 3.4).
EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
TOKEN_ALGORITHMS = HMAC_ALGORITHMS + RSA_ALGORITHMS + tuple(EC_CURVES)
DEFAULT_SUBSCRIBER_QUEUE_SIZE = MiB
# Recovery is for short absences (a reload, a network blip, a redeploy): five minutes
# covers them and keeps what a busy channel holds bounded in time as well as in number.
DEFAULT_HISTORY_TTL = 300.0


def subscribe_route(text):
    """``PATH[,envelope]`` -> SubscribeRoute; ValueError when malformed."""
    path, *options = [part.strip() for part in text.split(",")]
    if not path.startswith("/") or "?" in path or any(character.isspace() for character in path):
        raise ValueError(text)
    if any(option != "envelope" for option in options):
        raise ValueError(text)
    return SubscribeRoute(path, bool(options))


subscribe_route.__name__ = "subscribe route (PATH[,envelope], PATH starting with /)"


BROKER_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_REDIS_PORT = 6379


def broker_url(text):
    """A Redis URL, ``redis://[:password@]host[:port][/db]``, ``rediss://...`` or
    ``unix://[:password@]/path[?db=N]``; refused with a message that never shows the
    password (argparse would quote the whole value)."""
    url = text.strip()
    try:
        parts = urlsplit(url)
        parts.port  # a port that is not a number raises here
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in BROKER_SCHEMES:
        raise argparse.ArgumentTypeError(
            "%s is not a Redis URL: redis://[:password@]host:port/db, rediss://... or "
            "unix://path" % _scheme_only(url))
    shown = redacted_broker_url(url)
    if parts.scheme == "unix":
        if not parts.path:
            raise argparse.ArgumentTypeError("%s: no socket path" % shown)
    elif not parts.hostname:
        raise argparse.ArgumentTypeError("%s: no host" % shown)
    elif parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise argparse.ArgumentTypeError("%s: the path must be a database number" % shown)
    return url


broker_url.__name__ = "Redis URL"


def broker_secrets(url):
    """What PHP must never see: the URL, and its password as written and as meant."""
    password = urlsplit(url).password
    return [url] + ([password, unquote(password)] if password else [])


def redacted_broker_url(url):
    """The URL as logs may show it: ``redis://host:port/db``, without user or password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return "unix://%s" % parts.path
    return "%s://%s:%d/%s" % (parts.scheme, parts.hostname or "",
                              parts.port or DEFAULT_REDIS_PORT, parts.path.strip("/") or "0")


def _scheme_only(url):
    scheme, separator, _ = url.partition("://")
    return "%r" % (scheme + separator + "...") if separator else "the value"


CHANNELS = Section("channels", (
    Setting("api_key", "--api-key", env="WSS_CONFIG_API_KEY", value=text_or_none, secret=True,
            readme_default="off",
            help="key of the server API on the admin listener (/api/<method>, Centrifugo's "
                 "shape); without it there is no API",
            readme="key of the server API (``/api/<method>`` on the admin listener); unset: "
                   "no API"),
    Setting("token_secret", "--token-secret", env="WSS_CONFIG_TOKEN_SECRET", value=text_or_none,
            secret=True,
            help="secret that connection tokens (JWT) are signed with, for the HS* algorithms",
            readme="secret connection tokens are signed with (``HS*`` algorithms)"),
    Setting("token_algorithm", "--token-algorithm", env="WSS_CONFIG_TOKEN_ALGORITHM",
            type=choice_of(TOKEN_ALGORITHMS, str.upper), default="HS256",
            help="the one algorithm connection tokens are accepted with: "
                 + ", ".join(TOKEN_ALGORITHMS),
            readme="the one algorithm tokens are accepted with: " + ", ".join(
                "``%s``" % algorithm for algorithm in TOKEN_ALGORITHMS)),
    Setting("token_public_key", "--token-public-key", env="WSS_CONFIG_TOKEN_PUBLIC_KEY",
            value=text_or_none,
            help="PEM file of the public key connection tokens are verified with, for the RS* "
                 "and ES* algorithms",
            readme="PEM file of the public key tokens are verified with (``RS*``, ``ES*``)"),
    Setting("require_token", "--require-token", env="WSS_CONFIG_REQUIRE_TOKEN",
            action="store_true", default=False,
            help="refuse with HTTP 401 a connection to a PHP route without a valid token",
            readme="PHP routes too refuse a connection without a valid token (401)"),
    Setting("subscribe_routes", "--subscribe-route", env="WSS_CONFIG_SUBSCRIBE_ROUTES",
            type=subscribe_route, action="append",
            help="PATH[,envelope]: path of receive-only connections: a valid token is "
                 "required, they are subscribed to its channels and start no PHP; envelope "
                 "wraps publications in {\"channel\": ..., \"data\": ...} (repeatable)",
            readme="``PATH[,envelope]``: receive-only connections: token required, subscribed "
                   "to its channels, no PHP; ``envelope`` as for ``--route``"),
    Setting("subscriber_queue_size", "--subscriber-queue-size",
            env="WSS_CONFIG_SUBSCRIBER_QUEUE_SIZE", type=at_most(MAX_HELD_BYTES, positive_int),
            default=DEFAULT_SUBSCRIBER_QUEUE_SIZE,
            help="bytes of publications that may wait for one slow client; past it the client "
                 "is closed with 1008",
            readme="bytes of publications that may wait for one slow client; past it: 1008"),
    Setting("history_size", "--history-size", env="WSS_CONFIG_HISTORY_SIZE",
            type=at_most(MAX_COUNT, non_negative_int), default=0,
            help="publications kept per channel for the history API and for recovery; "
                 "publish then answers each publication's offset and epoch (0: no history)",
            readme="publications kept per channel (history API, recovery); 0: none"),
    Setting("history_ttl", "--history-ttl", env="WSS_CONFIG_HISTORY_TTL",
            type=positive_seconds, default=DEFAULT_HISTORY_TTL,
            help="seconds a channel's history is kept after its last publication",
            readme="seconds a channel's history is kept after its last publication"),
    Setting("broker", "--broker", env="WSS_CONFIG_BROKER", type=broker_url, secret=broker_secrets,
            readme_default="off",
            help="redis://[:password@]host:port/db (or rediss://, unix://): several nodes share "
                 "channels, presence and history through this Redis; without it, the channels "
                 "of this machine only",
            readme="``redis://[:password@]host:port/db`` (or ``rediss://``, ``unix://``): "
                   "nodes share channels, presence and history through Redis; unset: this "
                   "machine's only"),
    Setting("broker_timeout", "--broker-timeout", env="WSS_CONFIG_BROKER_TIMEOUT",
            type=positive_seconds, default=1.0,
            help="seconds any call to the broker may take (connect, answer); past it the "
                 "publication fails and /readyz says the broker is unavailable",
            readme="seconds any call to the broker may take; past it: an error, /readyz 503"),
    Setting("node_ttl", "--node-ttl", env="WSS_CONFIG_NODE_TTL",
            type=at_most(MAX_SECONDS, positive_int), default=30,
            help="seconds a node's presence and info entries live in the broker unless it "
                 "refreshes them (every third of it): a node that died leaves them then",
            readme="seconds a node's presence and ``info`` entries outlive it (refreshed "
                   "every third of it)"),
), title="channels and tokens",
    description="Publications reach every subscribed client straight from the bridge. "
                "Connection tokens (JWT, Centrifugo's claims) name the user and the channels.")
