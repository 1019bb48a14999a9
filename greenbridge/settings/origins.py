"""The value of ``--allow-origin``: an origin pattern, parsed and matched.

A pattern is an origin (``https://app.example.com``, ``http://localhost:3000``)
or a host pattern with any scheme (``*.example.com`` matches every subdomain,
``example.com`` only itself); ``https://*.example.com`` limits the scheme too.
A port must be given to allow a non-default one. origin.py checks requests
against the patterns.
"""

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class OriginPattern:
    def __init__(self, text):
        """Raise ValueError when `text` is not an origin or host pattern."""
        scheme, has_scheme, rest = text.strip().lower().rpartition("://")
        if not rest or "/" in rest or (has_scheme and not scheme):
            raise ValueError(text)
        self.scheme = scheme or None
        self.host, self.port = split_host_port(rest)
        if not self.host or "*" in self.host.replace("*.", "", 1) or \
                ("*" in self.host and not self.host.startswith("*.")):
            raise ValueError(text)

    def matches(self, scheme, host, port):
        if self.scheme is not None and scheme != self.scheme:
            return False
        if port != (self.port if self.port is not None else DEFAULT_PORTS.get(scheme)):
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


def split_host_port(text):
    """'host', 'host:8080', '[::1]:8080' -> (host, port or None); ValueError on a bad port."""
    host, port = text, None
    if text.startswith("["):
        host, _, after = text.partition("]")
        host += "]"
        if after:
            if not after.startswith(":"):
                raise ValueError(text)
            port = after[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port is not None:
        port = int(port)
        if not 0 < port < 65536:
            raise ValueError(text)
    return host, port


def origin_pattern(text):
    """The argument type of --allow-origin (comma_separated around it)."""
    OriginPattern(text)
    return text.strip().lower()


origin_pattern.__name__ = "origin (https://host[:port] or *.example.com)"
