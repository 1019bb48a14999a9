"""The channel options: the server API's key, connection tokens, subscribe routes, queues.

What a token's algorithm needs (a secret or a public key of its family) and
where a subscribe route may be are checked across options in checks.py.
"""

from greenbridge.settings.declaration import Section, Setting
from greenbridge.settings.routes import SubscribeRoute
from greenbridge.settings.values import (MAX_COUNT, MAX_HELD_BYTES, MiB, at_most, choice_of,
                                         non_negative_int, positive_int, positive_seconds,
                                         text_or_none)

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
), title="channels and tokens",
    description="Publications reach every subscribed client straight from the bridge. "
                "Connection tokens (JWT, Centrifugo's claims) name the user and the channels.")
