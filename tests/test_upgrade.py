"""The upgrade request's checks (upgrade.py) on their own: a WSGI environ in, Rejected or not.

What must pass is RFC 6455 section 4.2.1 read directly; test_fuzz.py checks random
environs against the same reading, and test_bridge.py keeps a refusal through a server.
"""

import pytest

from greenbridge.upgrade import Rejected, accept_key, check_upgrade_request, rejection_response

# The RFC 6455 1.3 example key.
UPGRADE = {"REQUEST_METHOD": "GET", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
           "HTTP_SEC_WEBSOCKET_VERSION": "13", "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ=="}


def refusal(changes, protocol="HTTP/1.1"):
    """(status, reason, headers) of the refusal of UPGRADE with `changes` (None: header left out)."""
    environ = {name: value for name, value in {**UPGRADE, **changes}.items() if value is not None}
    with pytest.raises(Rejected) as refused:
        check_upgrade_request(environ, protocol)
    return refused.value.status, refused.value.reason, refused.value.headers


@pytest.mark.parametrize("changes", [
    {},
    {"HTTP_UPGRADE": "WebSocket"},
    {"HTTP_UPGRADE": "h2c, websocket"},
    {"HTTP_CONNECTION": "keep-alive, Upgrade"},
    {"HTTP_CONNECTION": "UPGRADE"},
    {"HTTP_SEC_WEBSOCKET_VERSION": " 13 "},
    {"HTTP_SEC_WEBSOCKET_KEY": " AAAAAAAAAAAAAAAAAAAAAA== "},
])
def test_well_formed_upgrades_pass(changes):
    check_upgrade_request({**UPGRADE, **changes}, "HTTP/1.1")


NOT_AN_UPGRADE = ("426 Upgrade Required", "not a WebSocket upgrade request",
                  [("Upgrade", "websocket"), ("Connection", "Upgrade")])


@pytest.mark.parametrize("changes,protocol,expected", [
    ({"HTTP_UPGRADE": None}, "HTTP/1.1", NOT_AN_UPGRADE),
    ({"HTTP_UPGRADE": "h2c"}, "HTTP/1.1", NOT_AN_UPGRADE),
    ({"REQUEST_METHOD": "POST"}, "HTTP/1.1",
     ("400 Bad Request", "WebSocket upgrade must use GET", [])),
    ({"REQUEST_METHOD": "get"}, "HTTP/1.1",
     ("400 Bad Request", "WebSocket upgrade must use GET", [])),
    ({}, "HTTP/1.0", ("400 Bad Request", "WebSocket upgrade needs HTTP/1.1", [])),
    ({"HTTP_CONNECTION": "keep-alive"}, "HTTP/1.1",
     ("400 Bad Request", "Connection header lacks 'upgrade'", [])),
    ({"HTTP_CONNECTION": None}, "HTTP/1.1",
     ("400 Bad Request", "Connection header lacks 'upgrade'", [])),
    ({"HTTP_SEC_WEBSOCKET_VERSION": "8"}, "HTTP/1.1",
     ("426 Upgrade Required", "unsupported Sec-WebSocket-Version",
      [("Sec-WebSocket-Version", "13")])),
    ({"HTTP_SEC_WEBSOCKET_VERSION": None}, "HTTP/1.1",
     ("426 Upgrade Required", "unsupported Sec-WebSocket-Version",
      [("Sec-WebSocket-Version", "13")])),
    ({"HTTP_SEC_WEBSOCKET_KEY": "not-a-valid-key"}, "HTTP/1.1",
     ("400 Bad Request", "invalid Sec-WebSocket-Key", [])),
    ({"HTTP_SEC_WEBSOCKET_KEY": "AAAAAAAAAAAAAAAAAAAA"}, "HTTP/1.1",  # 15 bytes, not 16
     ("400 Bad Request", "invalid Sec-WebSocket-Key", [])),
    ({"HTTP_SEC_WEBSOCKET_KEY": None}, "HTTP/1.1",
     ("400 Bad Request", "invalid Sec-WebSocket-Key", [])),
], ids=["no-upgrade", "upgrade-h2c", "post", "lower-case-get", "http-1.0",
        "no-connection-upgrade", "no-connection", "version-8", "no-version", "bad-key",
        "key-of-15-bytes", "no-key"])
def test_malformed_upgrades_are_refused(changes, protocol, expected):
    assert refusal(changes, protocol) == expected


def test_the_accept_key_is_the_rfcs():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 1.3


def test_a_refusal_is_answered_in_plain_http():
    answered = []
    body = rejection_response(lambda status, headers: answered.append((status, headers)),
                              Rejected("426 Upgrade Required", "not a WebSocket upgrade request",
                                       [("Upgrade", "websocket")]))
    assert b"".join(body) == b"not a WebSocket upgrade request\n"
    assert answered == [("426 Upgrade Required", [
        ("Upgrade", "websocket"), ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", "32"), ("Connection", "close")])]
