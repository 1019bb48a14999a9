"""The value of ``--route``: ``PATH=SCRIPT[,mode=MODE][,subprotocol=NAME]...[,envelope]``.

A route maps one request path to its own script, optionally with its own
message mode and subprotocol list, and may wrap the channel publications its
clients receive in a JSON envelope; routing.py picks the route of a request.
"""

import os
from dataclasses import dataclass
from typing import Optional, Tuple

from greenbridge.settings.values import MODES


@dataclass(frozen=True)
class Route:
    path: Optional[str]  # None: the default script, for every path without a route
    script: str
    message_mode: Optional[str] = None  # None: --message-mode
    subprotocols: Optional[Tuple[str, ...]] = None  # None: --subprotocol
    envelope: bool = False  # publications as {"channel": ..., "data": ...}


@dataclass(frozen=True)
class SubscribeRoute:
    """A ``--subscribe-route``: receive-only connections, no script."""
    path: str
    envelope: bool = False


def parse_route(text):
    """``PATH=SCRIPT[,mode=MODE][,subprotocol=NAME]...[,envelope]`` -> Route; ValueError
    when malformed."""
    target, *options = [part.strip() for part in text.split(",")]
    path, equals, script = target.partition("=")
    path, script = path.strip(), script.strip()
    if not equals or not path.startswith("/") or not script:
        raise ValueError("expected PATH=SCRIPT with PATH starting with /")
    message_mode = None
    subprotocols = []
    envelope = False
    for option in options:
        name, equals, value = option.partition("=")
        name, value = name.strip(), value.strip()
        if name == "mode" and value in MODES:
            message_mode = value
        elif name == "subprotocol" and value:
            subprotocols.append(value)
        elif name == "envelope" and not equals:
            envelope = True
        else:
            raise ValueError("unknown route option %r (mode=raw|line|framed, subprotocol=NAME, "
                             "envelope)" % option)
    return Route(path, os.path.abspath(script), message_mode,
                 tuple(subprotocols) if subprotocols else None, envelope)


parse_route.__name__ = "route (PATH=SCRIPT[,mode=MODE][,subprotocol=NAME][,envelope])"
