"""systemd's notify protocol (sd_notify): READY=1, RELOADING=1, STOPPING=1.

One datagram per state change to the socket named by NOTIFY_SOCKET; when the
server does not run under systemd (no socket), every call does nothing.
"""

import logging
import time

from gevent import socket

log = logging.getLogger("greenbridge.systemd")


class Notifier:
    def __init__(self, socket_path):
        # A leading "@" names a socket in the abstract namespace.
        self._address = "\0" + socket_path[1:] if socket_path.startswith("@") else socket_path

    def ready(self, status=""):
        self._send("READY=1", "STATUS=" + status if status else "")

    def reloading(self):
        # systemd wants the monotonic time with RELOADING=1 (Type=notify-reload).
        self._send("RELOADING=1", "MONOTONIC_USEC=%d" % (time.monotonic_ns() // 1000))

    def stopping(self):
        self._send("STOPPING=1")

    def _send(self, *fields):
        if not self._address:
            return
        message = "\n".join(field for field in fields if field).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, self._address)
        except OSError as error:
            log.warning("cannot notify systemd at %s: %s", self._address.lstrip("\0"), error)
