"""Which script, message mode and subprotocol a request gets.

``--route /chat=chat.php,mode=framed,subprotocol=chat.v1`` maps one request
path to its own script, optionally with its own mode and subprotocol list
(settings/routes.py parses it); ``--script`` handles every other path. A
``--subscribe-route`` path runs no script: its connections only receive
publications (subscribe_route.py).
Refusals are ``Rejected`` (404, 400) so nothing is spawned for them.
"""

from dataclasses import dataclass
from typing import Optional

from greenbridge.settings.routes import Route
from greenbridge.upgrade import Rejected


@dataclass(frozen=True)
class Endpoint:
    """What one admitted request runs with."""
    script: Optional[str]  # None on a subscribe route
    message_mode: Optional[str]
    subprotocol: Optional[str]
    receive_only: bool = False  # a subscribe route: no PHP
    envelope: bool = False  # publications wrapped in {"channel": ..., "data": ...}


class Router:
    def __init__(self, routes, default_script, message_mode, subprotocols, subscribe_routes=()):
        self._routes = {route.path: route for route in routes}
        self._subscribe_routes = {route.path: route for route in subscribe_routes}
        self._default = Route(None, default_script) if default_script else None
        self._message_mode = message_mode
        self._subprotocols = subprotocols

    def endpoint(self, path, offered_protocols):
        """The Endpoint for a request path and its Sec-WebSocket-Protocol value, or Rejected."""
        subscribe_route = self._subscribe_routes.get(path)
        if subscribe_route is not None:
            return Endpoint(None, None, select_subprotocol(parse_protocols(offered_protocols),
                                                           self._subprotocols),
                            receive_only=True, envelope=subscribe_route.envelope)
        route = self._routes.get(path, self._default)
        if route is None:
            raise Rejected("404 Not Found", "no route for %s" % path)
        accepted = self._subprotocols if route.subprotocols is None else route.subprotocols
        return Endpoint(route.script, route.message_mode or self._message_mode,
                        select_subprotocol(parse_protocols(offered_protocols), accepted),
                        envelope=route.envelope)


def parse_protocols(header_value):
    return [token.strip() for token in (header_value or "").split(",") if token.strip()]


def select_subprotocol(offered, accepted):
    """The first offered protocol that is accepted; with no accepted list, the first offered.

    Browsers drop a connection whose requested protocol is not echoed, so an
    unconfigured bridge echoes the client's first choice.
    """
    if not offered:
        return None
    if not accepted:
        return offered[0]
    for protocol in offered:
        if protocol in accepted:
            return protocol
    raise Rejected("400 Bad Request", "none of the offered subprotocols (%s) is supported"
                   % ", ".join(offered), kind="subprotocol")
