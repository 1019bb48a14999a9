"""The two forwarding loops, one greenlet each, and what they count.

Back-pressure comes from blocking: each loop holds at most one message or one
read while its destination is slow, so neither side can make the bridge
buffer without bound.
"""

import time

from geventwebsocket.exceptions import WebSocketError

from greenbridge.sockets import send_all

# Why a pump stopped.
CLIENT_ENDED = "client"
PHP_ENDED = "php"


class Traffic:
    """Bytes each way and the time of the last message, for timeouts and the access log."""

    __slots__ = ("to_php", "to_client", "last_activity")

    def __init__(self):
        self.to_php = 0
        self.to_client = 0
        self.last_activity = time.monotonic()


def client_to_php(websocket, php_socket, traffic):
    """Write each client message's payload to PHP as raw bytes."""
    while True:
        message = websocket.receive_message()
        if message is None:
            return CLIENT_ENDED
        _opcode, payload = message
        try:
            send_all(php_socket, payload)
        except OSError:
            return PHP_ENDED
        traffic.to_php += len(payload)
        traffic.last_activity = time.monotonic()


def php_to_client(php_socket, websocket, buffer_size, early_data, traffic):
    """Send whatever PHP writes to the client, one binary message per read."""
    data = early_data
    while True:
        if data:
            try:
                websocket.send_message(data)
            except (OSError, WebSocketError):
                return CLIENT_ENDED
            traffic.to_client += len(data)
            traffic.last_activity = time.monotonic()
        try:
            data = php_socket.recv(buffer_size)
        except OSError:
            return PHP_ENDED
        if not data:
            return PHP_ENDED
