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
no secret and quotes at most a short piece of what the client sent. The
verifier itself is token_verifier.py: PyJWT loads cryptography, which a
bridge without tokens does not need.
"""

import re
from dataclasses import dataclass
from typing import Any, Tuple
from urllib.parse import parse_qsl

from greenbridge.channels.hub import MAX_SUBSCRIPTIONS_PER_CLIENT
from greenbridge.channel_names import ChannelNameError, check_channel

QUERY_PARAMETER = "token"
_BEARER = "bearer "
# What the access log shows of a URI: the token is a credential.
_TOKEN_IN_QUERY = re.compile(r"([?&]%s=)[^&]*" % QUERY_PARAMETER)
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


def is_text(value):
    """A string PHP can be given in its environment (WSS_USER)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")  # JSON allows lone surrogates ("\ud800"); UTF-8 does not
    except UnicodeEncodeError:
        return False
    return True


def checked_channels(claim):
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


def shown(value):
    """A short, quoted piece of what a client sent."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
