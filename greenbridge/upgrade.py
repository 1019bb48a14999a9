"""The upgrade request (RFC 6455 section 4.2), without I/O: its checks and the answers to it.

What a request must be to become a WebSocket, the ``Rejected`` refusal every
check raises (routing, origin and admission too), and the answers: the
Sec-WebSocket-Accept key, a refusal as a plain HTTP response. handler.py runs
these checks in gevent's request handling.
"""

import base64
import hashlib

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# RFC 9110 5.6.2: methods, header names and subprotocols are tokens.


class Rejected(Exception):
    """The request is answered with an HTTP error instead of an upgrade: every refusal.

    ``kind`` is the metrics label: limit, origin, bad_request, shutting_down...
    """

    def __init__(self, status, reason, headers=(), kind=None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)
        self.kind = kind or _REJECTION_KINDS.get(status[:3], "bad_request")


_REJECTION_KINDS = {"503": "limit", "403": "origin", "404": "route"}


def wants_websocket(environ):
    """Does the request ask for a WebSocket (well-formed or not)?"""
    return _names_websocket(environ.get("HTTP_UPGRADE", ""))


def _names_websocket(upgrade_header):
    return "websocket" in [token.strip() for token in upgrade_header.lower().split(",")]


class MalformedRequest(Rejected, ValueError):
    """A request gevent would pass on that greenbridge answers with 400.

    Raised while gevent reads the request, which answers a ValueError as the
    client's error (see BridgeHandler._handle_client_error).
    """

    def __init__(self, reason):
        super().__init__("400 Bad Request", reason)


def check_header_section(headers):
    """Raise MalformedRequest for a header section that cannot be taken as it came.

    http.client keeps an obsolete line folding (RFC 9112 5.2) inside the value
    and drops lines it cannot parse (recording a defect); an upgrade request
    has no body, and waiting for one would hold the connection.
    """
    if headers.defects:
        raise MalformedRequest("malformed header section (%s)" % type(headers.defects[0]).__name__)
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise MalformedRequest("obsolete line folding in header %r" % name[:64])
    if _names_websocket(headers.get("Upgrade", "")) and (
            int(headers.get("Content-Length") or 0) or "Transfer-Encoding" in headers):
        raise MalformedRequest("WebSocket upgrade request with a body")


def check_upgrade_request(environ, request_version):
    """Raise Rejected unless the request is a well-formed RFC 6455 upgrade."""
    if not wants_websocket(environ):
        raise Rejected("426 Upgrade Required", "not a WebSocket upgrade request",
                       [("Upgrade", "websocket"), ("Connection", "Upgrade")])
    if environ.get("REQUEST_METHOD") != "GET":
        raise Rejected("400 Bad Request", "WebSocket upgrade must use GET")
    if request_version != "HTTP/1.1":
        raise Rejected("400 Bad Request", "WebSocket upgrade needs HTTP/1.1")
    connection = [token.strip() for token in environ.get("HTTP_CONNECTION", "").lower().split(",")]
    if "upgrade" not in connection:
        raise Rejected("400 Bad Request", "Connection header lacks 'upgrade'")
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        raise Rejected("426 Upgrade Required", "unsupported Sec-WebSocket-Version",
                       [("Sec-WebSocket-Version", "13")])
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise Rejected("400 Bad Request", "invalid Sec-WebSocket-Key") from None


def accept_key(key):
    digest = hashlib.sha1((key.strip() + WEBSOCKET_GUID).encode("latin-1")).digest()
    return base64.b64encode(digest).decode("ascii")


def rejection_response(start_response, rejection):
    """Answer a refused request in plain WSGI; returns the body iterable."""
    body = (rejection.reason + "\n").encode("utf-8")
    start_response(rejection.status, rejection.headers + [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close")])
    return [body]
