"""The server API (Centrifugo v5's HTTP shape) driven by the real ``cent`` client.

Subscribers are real WebSocket clients on a subscribe route, with tokens
minted by PyJWT; what they receive is what a browser would.
"""

import base64
import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest
from cent import (BroadcastRequest, ChannelsRequest, Client, DisconnectRequest, InfoRequest,
                  PresenceRequest, PresenceStatsRequest, PublishRequest, SubscribeRequest,
                  UnsubscribeRequest)
from cent.dto import Disconnect
from cent.exceptions import CentApiResponseError, CentUnauthorizedError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from greenbridge.channels.api_methods import ApiError, ServerApiMethods
from greenbridge.channels.broker import BrokerUnavailable
from support import (admin_port, assert_api_sees_ann_twice_and_bob, connection_token,
                     readme_snippet, stopped_log, wait_until,
                     worker_holding)

API_KEY = "the-api-key-of-these-tests"
TOKEN_SECRET = "the-token-secret-of-these-tests-0123456789"
SUBSCRIBE_ROUTE = "/live"


def token(user, channels=(), info=None):
    return connection_token(TOKEN_SECRET, user, channels, info)


@pytest.fixture
def api_bridge(start_bridge):
    def start(*flags):
        bridge = start_bridge("--admin-port", "0", "--api-key", API_KEY, "--token-secret",
                              TOKEN_SECRET, "--subscribe-route", SUBSCRIBE_ROUTE, *flags)
        bridge.api = Client("http://127.0.0.1:%d/api" % admin_port(bridge), API_KEY)
        return bridge
    return start


def subscriber(bridge, user, channels=(), info=None):
    return connect(bridge.url("%s?token=%s" % (SUBSCRIBE_ROUTE, token(user, channels, info))))


def received(ws, timeout=10):
    return ws.recv(timeout=timeout)


def nothing_more(bridge, ws, user):
    """True when `ws` (of `user`) has nothing queued: a marker published now is the next
    thing it gets."""
    bridge.api.subscribe(SubscribeRequest(user=user, channel="nothing-more"))
    bridge.api.publish(PublishRequest(channel="nothing-more", data="marker"))
    return received(ws) == '"marker"'


def api_post(bridge, method, body, headers=None):
    """(HTTP status, body text) of a raw POST to /api/<method>; a header given as None
    is left out."""
    headers = {name: value for name, value in {"X-API-Key": API_KEY, **(headers or {})}.items()
               if value is not None}
    request = urllib.request.Request(
        "http://127.0.0.1:%d/api/%s" % (admin_port(bridge), method), data=body,
        headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_readmes_curl_command_publishes(api_bridge):
    bridge = api_bridge()
    command = readme_snippet("api-curl").replace("127.0.0.1:9090", "127.0.0.1:%d"
                                                 % admin_port(bridge))
    with subscriber(bridge, "ann", ["news"]) as ann:
        subprocess.run(["bash", "-c", command], env=dict(os.environ, KEY=API_KEY), check=True,
                       capture_output=True, timeout=30)
        assert received(ann) == '{"text":"hello"}'


def test_a_publication_reaches_every_subscriber_of_its_channel_as_published(api_bridge):
    bridge = api_bridge()
    with subscriber(bridge, "ann", ["news"]) as ann, subscriber(bridge, "bob", ["news"]) as bob, \
            subscriber(bridge, "cy", ["sport"]) as cy:
        bridge.api.publish(PublishRequest(channel="news", data={"text": "hello", "n": 1}))
        assert received(ann) == received(bob) == '{"text":"hello","n":1}'
        bridge.api.publish(PublishRequest(channel="news", data=None, b64data=base64.b64encode(
            b"\x00\xffbytes").decode()))
        assert received(ann) == received(bob) == b"\x00\xffbytes"
        assert nothing_more(bridge, cy, "cy")


def test_a_subscribe_route_with_envelope_names_the_channel(api_bridge):
    bridge = api_bridge("--subscribe-route", "/wrapped,envelope")
    with connect(bridge.url("/wrapped?token=" + token("ann", ["news", "sport"]))) as ann:
        bridge.api.publish(PublishRequest(channel="sport", data={"score": [1, 0]}))
        assert received(ann) == '{"channel":"sport","data":{"score":[1,0]}}'
        bridge.api.publish(PublishRequest(channel="news", data=None, b64data="AAE="))
        assert received(ann) == '{"channel":"news","b64data":"AAE="}'


def test_publications_arrive_in_order_none_missing_none_twice(api_bridge):
    bridge = api_bridge()
    with subscriber(bridge, "ann", ["feed"]) as ann:
        for number in range(200):
            bridge.api.publish(PublishRequest(channel="feed", data=number))
        assert [received(ann) for _ in range(200)] == [str(number) for number in range(200)]
        assert nothing_more(bridge, ann, "ann")


def test_broadcast_answers_once_per_channel(api_bridge):
    bridge = api_bridge()
    with subscriber(bridge, "ann", ["a"]) as ann, subscriber(bridge, "bob", ["b"]) as bob:
        result = bridge.api.broadcast(BroadcastRequest(channels=["a", "b", "bad channel"],
                                                       data="hi"))
        assert [response.error is None for response in result.responses] == [True, True, False]
        assert result.responses[2].error.code == 102
        assert received(ann) == received(bob) == '"hi"'


def test_presence_channels_and_info_count_the_subscribers(api_bridge):
    bridge = api_bridge()
    with subscriber(bridge, "ann", ["chat:1", "chat:2"], info={"name": "Ann"}), \
            subscriber(bridge, "ann", ["chat:1"]), subscriber(bridge, "bob", ["news"]):
        assert_api_sees_ann_twice_and_bob(bridge.api)
        [node] = bridge.api.info(InfoRequest()).nodes
        assert (node.num_clients, node.num_users, node.num_channels, node.num_subs) \
            == (3, 2, 3, 4)
        assert bridge.api.presence(PresenceRequest(channel="nobody-here")).presence == {}
    wait_until(lambda: bridge.api.channels(ChannelsRequest()).channels == {}, 10,
               "every channel gone with its subscribers")


def test_subscribe_and_unsubscribe_act_on_every_connection_of_the_user(api_bridge):
    bridge = api_bridge()
    with subscriber(bridge, "ann") as first, subscriber(bridge, "ann") as second, \
            subscriber(bridge, "bob") as bob:
        bridge.api.subscribe(SubscribeRequest(user="ann", channel="room"))
        bridge.api.publish(PublishRequest(channel="room", data="one"))
        assert received(first) == received(second) == '"one"'
        bridge.api.unsubscribe(UnsubscribeRequest(user="ann", channel="room"))
        assert bridge.api.channels(ChannelsRequest()).channels == {}
        assert nothing_more(bridge, first, "ann") and nothing_more(bridge, bob, "bob")


def test_disconnect_closes_the_users_connections_with_the_code_asked(api_bridge):
    bridge = api_bridge()
    with subscriber(bridge, "ann") as first, subscriber(bridge, "ann") as second, \
            subscriber(bridge, "bob") as bob:
        bridge.api.disconnect(DisconnectRequest(user="ann", disconnect=Disconnect(
            code=4001, reason="account closed")))
        for ws in (first, second):
            with pytest.raises(ConnectionClosed):
                received(ws)
            assert (ws.close_code, ws.close_reason) == (4001, "account closed")
        assert nothing_more(bridge, bob, "bob")
        bridge.api.disconnect(DisconnectRequest(user="bob"))
        with pytest.raises(ConnectionClosed):
            received(bob)
        assert bob.close_code == 1000


def test_a_wrong_or_missing_key_is_refused_and_changes_nothing(api_bridge):
    bridge = api_bridge()
    with subscriber(bridge, "ann", ["news"]) as ann:
        wrong = Client(bridge.api._session._base_url, "not-the-key")
        with pytest.raises(CentUnauthorizedError):
            wrong.publish(PublishRequest(channel="news", data="forged"))
        assert api_post(bridge, "publish", b'{"channel":"news","data":1}',
                        {"X-API-Key": ""})[0] == 401
        status, _ = api_post(bridge, "publish", b'{"channel":"news","data":"by header"}',
                             {"X-API-Key": None, "Authorization": "apikey " + API_KEY})
        assert status == 200
        assert received(ann) == '"by header"'
        assert nothing_more(bridge, ann, "ann")
    assert "missing or wrong API key" in stopped_log(bridge)  # rate-limited: once here


def test_without_an_api_key_there_is_no_api(start_bridge):
    bridge = start_bridge("--admin-port", "0")
    status, _ = api_post(bridge, "publish", b'{"channel":"news","data":1}')
    assert status == 404


@pytest.mark.parametrize("method,body,status,says", [
    ("publish", b"{not json", 400, "not JSON"),
    ("publish", b"[1, 2]", 400, "JSON object"),
    ("publish", b"\xff\xfe", 400, "not JSON"),
    ("publish", b"[" * 100000, 400, "not JSON"),
    ("nonsense", b"{}", 404, "no such API method"),
])
def test_a_body_that_is_not_a_request_gets_an_http_error(api_bridge, method, body, status, says):
    bridge = api_bridge()
    answer_status, text = api_post(bridge, method, body)
    assert answer_status == status and says in text
    assert "Traceback" not in stopped_log(bridge)


@pytest.mark.parametrize("request_body,code,says", [
    ({"data": 1}, 107, "channel is required"),
    ({"channel": 5, "data": 1}, 107, "channel must be a string"),
    ({"channel": "a b", "data": 1}, 102, "character"),
    ({"channel": "news"}, 107, "data or b64data is required"),
    ({"channel": "news", "b64data": "%%%"}, 107, "not base64"),
    ({"channel": "news", "data": "x" * 2000}, 106, "more than --max-payload-size 1024"),
])
def test_a_bad_publish_gets_an_error_object_and_delivers_nothing(api_bridge, request_body, code,
                                                                 says):
    bridge = api_bridge("--max-payload-size", "1024")
    with subscriber(bridge, "ann", ["news"]) as ann:
        status, text = api_post(bridge, "publish", json.dumps(request_body).encode())
        assert status == 200
        error = json.loads(text)["error"]
        assert error["code"] == code and says in error["message"], error
        assert nothing_more(bridge, ann, "ann")
    assert "Traceback" not in stopped_log(bridge)


def test_cent_reports_the_error_object(api_bridge):
    bridge = api_bridge()
    with pytest.raises(CentApiResponseError) as refused:
        bridge.api.publish(PublishRequest(channel="bad channel", data=1))
    assert refused.value.code == 102


def test_with_two_workers_a_publication_reaches_subscribers_on_both(api_bridge):
    bridge = api_bridge("--workers", "2")
    with contextlib.ExitStack() as stack:
        # Open subscribers until both workers hold some (bounded).
        opened = []
        for _ in range(40):
            opened.append(stack.enter_context(subscriber(bridge, "user%d" % len(opened),
                                                         ["all"])))
            if len({worker_holding(bridge, ws.socket) for ws in opened}) == 2:
                break
        assert len({worker_holding(bridge, ws.socket) for ws in opened}) == 2
        bridge.api.publish(PublishRequest(channel="all", data="everyone"))
        assert [received(ws) for ws in opened] == ['"everyone"'] * len(opened)
        assert bridge.api.presence_stats(PresenceStatsRequest(channel="all")).num_clients \
            == len(opened)
        [node] = bridge.api.info(InfoRequest()).nodes
        assert node.num_clients == len(opened)


# -- a broker that cannot answer (Redis down or slow) ------------------------------------


class UnavailableBroker:
    """Every call fails as a broker across nodes fails while Redis is down (a stand-in: the
    in-process broker cannot fail; the Redis broker's own tests kill a real Redis)."""

    keeps_history = True

    def __getattr__(self, name):
        def unavailable(*args):
            raise BrokerUnavailable("broker unavailable: connection refused")
        return unavailable


@pytest.mark.parametrize("method,body", [
    ("publish", {"channel": "c", "data": 1}), ("subscribe", {"user": "u", "channel": "c"}),
    ("unsubscribe", {"user": "u", "channel": "c"}), ("disconnect", {"user": "u"}),
    ("presence", {"channel": "c"}), ("presence_stats", {"channel": "c"}), ("channels", {}),
    ("info", {}), ("history", {"channel": "c"}), ("history_remove", {"channel": "c"}),
])
def test_a_broker_that_cannot_answer_is_code_100_for_every_method(method, body):
    with pytest.raises(ApiError) as refusal:
        ServerApiMethods(UnavailableBroker(), 1000).by_name[method](body)
    assert (refusal.value.code, refusal.value.message) == (
        100, "internal server error: broker unavailable: connection refused")


def test_broadcast_answers_code_100_for_each_channel_a_broker_cannot_publish_to():
    answer = ServerApiMethods(UnavailableBroker(), 1000).by_name["broadcast"](
        {"channels": ["a", "b"], "data": 1})
    assert answer == {"responses": [{"error": {
        "code": 100, "message": "internal server error: broker unavailable: connection refused"}}
    ] * 2}
