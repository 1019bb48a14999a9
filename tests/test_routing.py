"""Routes and subprotocol choice (routing.py) on their own: a path and Sec-WebSocket-Protocol in,
an Endpoint or a refusal out. test_routes.py keeps each answer through a real server."""

import pytest

from greenbridge.routing import Endpoint, Router
from greenbridge.settings.channels import subscribe_route
from greenbridge.settings.routes import Route
from greenbridge.upgrade import Rejected


def route(path, script, message_mode=None, subprotocols=None):
    return Route(path, script, message_mode, subprotocols)


CHAT = route("/chat", "chat.php", "framed", ("chat.v2", "chat.v1"))


def refusal(router, path, offered):
    with pytest.raises(Rejected) as refused:
        router.endpoint(path, offered)
    return refused.value.status, refused.value.kind, refused.value.reason


def test_a_route_gets_its_script_and_mode_other_paths_the_default():
    router = Router([CHAT, route("/plain", "plain.php")], "default.php", "raw", ())
    assert router.endpoint("/chat", None) == Endpoint("chat.php", "framed", None)
    assert router.endpoint("/plain", None) == Endpoint("plain.php", "raw", None)
    assert router.endpoint("/elsewhere", None) == Endpoint("default.php", "raw", None)
    assert router.endpoint("/chat/", None) == Endpoint("default.php", "raw", None)


def test_without_a_script_unrouted_paths_are_404():
    router = Router([CHAT], None, "raw", ())
    assert router.endpoint("/chat", None).script == "chat.php"
    for path in ("/other", "/chat/", "/", "/CHAT"):  # paths match exactly
        assert refusal(router, path, None) == ("404 Not Found", "route", "no route for %s" % path)


@pytest.mark.parametrize("offered,chosen", [
    (None, None),                 # no header: no subprotocol
    ("", None),
    ("first, second", "first"),
    (" first ,second", "first"),
    (",, first", "first"),
])
def test_without_a_list_the_first_offered_subprotocol_is_echoed(offered, chosen):
    assert Router([], "default.php", "raw", ()).endpoint("/", offered).subprotocol == chosen


@pytest.mark.parametrize("offered,chosen", [
    ("a, c, b", "c"),             # the client's order decides, not the list's
    ("b", "b"),
    ("c,b", "c"),
    (None, None),                 # offering none is fine
])
def test_the_first_offered_protocol_in_the_list_is_chosen(offered, chosen):
    assert Router([], "default.php", "raw", ("b", "c")).endpoint("/", offered).subprotocol \
        == chosen


def test_no_matching_subprotocol_is_400():
    router = Router([], "default.php", "raw", ("b",))
    assert refusal(router, "/", "a, x") == (
        "400 Bad Request", "subprotocol",
        "none of the offered subprotocols (a, x) is supported")


def test_route_subprotocols_replace_the_global_list():
    router = Router([CHAT], "default.php", "raw", ("global.v1",))
    assert router.endpoint("/chat", "chat.v1, chat.v2").subprotocol == "chat.v1"
    assert refusal(router, "/chat", "global.v1")[0] == "400 Bad Request"
    assert router.endpoint("/", "global.v1").subprotocol == "global.v1"
    assert refusal(router, "/", "chat.v1")[0] == "400 Bad Request"


def test_a_subscribe_route_receives_only_and_may_wrap_publications():
    router = Router([CHAT], "default.php", "raw", (),
                    [subscribe_route("/live"), subscribe_route("/wrapped,envelope")])
    assert router.endpoint("/live", None) == Endpoint(None, None, None, receive_only=True)
    assert router.endpoint("/wrapped", None) == Endpoint(None, None, None, receive_only=True,
                                                         envelope=True)
    assert router.endpoint("/chat", None).receive_only is False


@pytest.mark.parametrize("text", ["live", "/live,enveloped", "/live,envelope=1", "/li ve",
                                  "/live?x=1", ""])
def test_a_malformed_subscribe_route_is_refused(text):
    with pytest.raises(ValueError):
        subscribe_route(text)
