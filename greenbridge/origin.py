"""Origin checks: which web pages may make browsers open connections here.

Browsers send ``Origin`` with every WebSocket upgrade and let any page
connect anywhere, so without a check any site can make its visitors start
PHP processes. ``--allow-origin`` takes patterns (settings/origins.py: what
they are and how they match).

Same-origin compares the Origin with the host the client addressed: the
``Host`` header, or behind a trusted proxy its ``X-Forwarded-Host`` and
``X-Forwarded-Proto`` (the caller decides which; see request.capture_request).

Requests without ``Origin`` come from programs, not browsers, and pass.
"""

from urllib.parse import urlsplit

from greenbridge.settings.origins import DEFAULT_PORTS, OriginPattern, split_host_port
from greenbridge.upgrade import Rejected

# A page's scheme and the one its WebSocket uses to reach the same server.
_PAGE_SCHEMES = {"ws": "http", "wss": "https"}


def _parse_origin(origin):
    """(scheme, host, port) of an Origin header; None when it is not a usable origin ('null')."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path not in ("", "/"):
        return None
    host = "[%s]" % parts.hostname if ":" in parts.hostname else parts.hostname
    return parts.scheme, host, port if port is not None else DEFAULT_PORTS.get(parts.scheme)


class OriginPolicy:
    def __init__(self, allowed_patterns, same_origin):
        self._patterns = [OriginPattern(text) for text in allowed_patterns]
        self._same_origin = same_origin

    @property
    def enabled(self):
        return bool(self._patterns) or self._same_origin

    def check(self, origin, addressed_host, addressed_scheme):
        """Raise Rejected (403) unless the request's Origin is allowed. `addressed_host` is
        the host (port included) the client addressed, `addressed_scheme` its scheme when
        known (None: not compared)."""
        if not self.enabled or origin is None:
            return
        parsed = _parse_origin(origin)
        if parsed is not None:
            if self._same_origin and _same_origin(parsed, addressed_host, addressed_scheme):
                return
            if any(pattern.matches(*parsed) for pattern in self._patterns):
                return
        raise Rejected("403 Forbidden", "origin %r not allowed" % origin[:200])


def _same_origin(parsed_origin, addressed_host, addressed_scheme):
    scheme, host, port = parsed_origin
    if addressed_scheme is not None and _PAGE_SCHEMES.get(addressed_scheme,
                                                          addressed_scheme) != scheme:
        return False
    try:
        header_host, header_port = split_host_port((addressed_host or "").strip().lower())
    except ValueError:
        return False
    if header_port is None:
        header_port = DEFAULT_PORTS.get(scheme)
    return (host, port) == (header_host, header_port)
