"""Opening a listening socket, and saying in one line why it cannot open.

A port in use, a port below 1024 without the right to it, an address that is
not this machine's: each is a setting the user has to change, so it is
reported as the other configuration errors are, naming the option and its
value, with what to do (exit status 2, no traceback).
"""

import errno
import ipaddress

from gevent import socket

_LISTEN_BACKLOG = 1024

_ADVICE = {
    errno.EADDRINUSE: "another program listens there; stop it or pick another port",
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE; pick one from 1024 "
                  "up",
}


class ListenError(Exception):
    """A listener cannot open; the message is one line naming the option to change."""


class ListenOptions:
    """The options that set one listener's address and port, by their flags."""

    __slots__ = ("host", "port")

    def __init__(self, host, port):
        self.host = host
        self.port = port


WEBSOCKET = ListenOptions("--ws-host", "--ws-port")
BACKCONNECT = ListenOptions("--tcp-bind", "--tcp-port")
ADMIN = ListenOptions("--admin-host", "--admin-port")


def listen_tcp(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def listen_for(options, host, port, port_text=None):
    """listen_tcp; a failure raises ListenError naming `options` (a ListenOptions).

    `port_text` describes the port option's value when `port` is derived from
    it (worker N of --workers listens on --tcp-port + N - 1)."""
    try:
        return listen_tcp(host, port)
    except OSError as error:
        raise ListenError(why_cannot_listen(error, options, host, port, port_text)) from None


def why_cannot_listen(error, options, host, port, port_text=None, advice=None):
    """One line for an OSError of bind(): the option to change, its value, and what to do.

    `advice` replaces the usual one for a port in use or refused."""
    if isinstance(error, socket.gaierror):
        return "%s %s: no such host (%s)" % (options.host, host, error.strerror)
    if error.errno == errno.EADDRNOTAVAIL:
        return ("%s %s: not an address of this machine; use 0.0.0.0 (all its addresses), "
                "127.0.0.1 (itself only) or one of its own" % (options.host, host))
    reason = (error.strerror or str(error)).lower()
    advice = advice or _ADVICE.get(error.errno)
    return "%s %s: %s on %s%s" % (options.port, port_text or port, reason, host or "0.0.0.0",
                                  " (%s)" % advice if advice else "")


def is_loopback(host):
    """True for an address only this machine reaches (127.0.0.0/8, ::1, ::ffff:127.x)."""
    address = ipaddress.ip_address(host.split("%", 1)[0])
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback
