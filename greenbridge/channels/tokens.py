"""Connection tokens: JWTs with Centrifugo's connection-token claims, verified with PyJWT.

A client presents its token in ``?token=`` or ``Authorization: Bearer``. Only
the configured algorithm is accepted: never ``none``, and never an HMAC token
checked against a public key (the algorithm comes from the settings, not from
the token). The claims used:

- ``sub``: the user, a string, required; ``""`` is an anonymous user (as in Centrifugo);
- ``exp``, ``nbf``: checked when present (no leeway);
- ``channels``: the channel names the connection is subscribed to at connect;
- ``info``: any JSON value, kept as given (presence, ``WSS_TOKEN_INFO``).

Every refusal is a TokenError whose message is one line saying why; it names
no secret and quotes at most a short piece of what the client sent.
"""

import re
from dataclasses import dataclass
from typing import Any, Tuple
from urllib.parse import parse_qsl

import jwt

from greenbridge.channels.hub import MAX_SUBSCRIPTIONS_PER_CLIENT
from greenbridge.channels.names import ChannelNameError, check_channel

QUERY_PARAMETER = "token"
_BEARER = "bearer "
# What the access log shows of a URI: the token is a credential.
_TOKEN_IN_QUERY = re.compile(r"([?&]%s=)[^&]*" % QUERY_PARAMETER)
# PyJWT's own checks of the claims that greenbridge does not use are left out,
# as Centrifugo leaves them: aud and iss (no audience or issuer is configured)
# and iat (a clock a little ahead on the signing host must not refuse fresh tokens);
# sub is checked here, with a message of greenbridge's.
_DECODE_OPTIONS = {"require": ["sub"], "verify_aud": False, "verify_iss": False,
                   "verify_iat": False, "verify_sub": False}


class TokenError(ValueError):
    """A token that is refused; the message is one line saying why."""


@dataclass(frozen=True)
class ConnectionToken:
    """What a verified token says about its connection."""
    user: str  # the sub claim; "" for an anonymous user
    channels: Tuple[str, ...] = ()  # subscribed at connect
    info: Any = None  # the info claim as given (None: none)


def presented_token(query, authorization):
    """The token a request presents in its query string or its Authorization header
    (a value or None), or None; TokenError when it presents more than one."""
    tokens = [value for name, value in parse_qsl(query, keep_blank_values=True)
              if name == QUERY_PARAMETER]
    if authorization and authorization[:len(_BEARER)].lower() == _BEARER:
        tokens.append(authorization[len(_BEARER):].strip())
    if len(tokens) > 1:
        raise TokenError("more than one token given (?token= and Authorization: Bearer "
                         "hold one between them)")
    return tokens[0] if tokens else None


def without_token(uri):
    """`uri` with the value of its token parameter hidden, for the log."""
    return _TOKEN_IN_QUERY.sub(r"\1...", uri)


class TokenVerifier:
    """Verifies tokens of one algorithm with one key: the secret (HS*) or a public key."""

    def __init__(self, algorithm, key):
        self.algorithm = algorithm
        self._key = key

    def verify(self, token):
        """The ConnectionToken of a valid token; TokenError with the reason otherwise."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise TokenError("malformed token (not a JWT)") from None
        if algorithm != self.algorithm:
            raise TokenError("token algorithm %s is not the one accepted, %s"
                             % (_shown(algorithm), self.algorithm))
        try:
            claims = jwt.decode(token, self._key, algorithms=[self.algorithm],
                                options=_DECODE_OPTIONS)
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token not yet valid (nbf)") from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad token signature") from None
        except jwt.MissingRequiredClaimError:
            raise TokenError("token without a sub claim (the user; \"\" for anonymous)") from None
        except jwt.PyJWTError as error:
            raise TokenError("malformed token (%s)" % _shown(str(error))) from None
        except (ValueError, TypeError, OverflowError):
            # PyJWT's int() of an exp or nbf that JSON allowed (Infinity, NaN, 1e400).
            raise TokenError("malformed token (exp or nbf is not a time)") from None
        if not _is_text(claims["sub"]):
            raise TokenError("token sub claim is not a string of text (no NUL, valid UTF-8)")
        return ConnectionToken(claims["sub"], _channels(claims.get("channels", [])),
                               claims.get("info"))


def _is_text(value):
    """A string PHP can be given in its environment (WSS_USER)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")  # JSON allows lone surrogates ("\ud800"); UTF-8 does not
    except UnicodeEncodeError:
        return False
    return True


def _channels(claim):
    if not isinstance(claim, list):
        raise TokenError("bad channels claim: a list of channel names, not %s"
                         % type(claim).__name__)
    if len(claim) > MAX_SUBSCRIPTIONS_PER_CLIENT:
        raise TokenError("bad channels claim: %d channels, at most %d"
                         % (len(claim), MAX_SUBSCRIPTIONS_PER_CLIENT))
    try:
        return tuple(dict.fromkeys(check_channel(name) for name in claim))
    except ChannelNameError as error:
        raise TokenError("bad channels claim: %s" % error) from None


def _shown(value):
    """A short, quoted piece of what a client sent."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
