"""Several nodes as one over a real redis-server (--broker): publications from the API and
from PHP reach subscribers on every node, the API answers for all nodes, and a node that
dies (SIGKILL) leaves presence and ``info`` after --node-ttl.

Nodes are real greenbridge processes; the API is driven by the real ``cent`` client;
subscribers are real WebSocket clients on a subscribe route, with tokens made by PyJWT.
"""

import contextlib
import signal

import pytest
from cent import (ChannelsRequest, DisconnectRequest, InfoRequest, PresenceRequest,
                  PresenceStatsRequest, PublishRequest, SubscribeRequest, UnsubscribeRequest)
from cent.dto import Disconnect
from websockets.sync.client import connect

from support import (NODE_FLAGS, admin_port, assert_api_sees_ann_twice_and_bob, client_in,
                     closed_with, http_get, node_ready as ready, node_subscriber as subscriber,
                     php_command, php_environment, run_cli, stop_cleanly, stopped_log, wait_until,
                     worker_holding)

NODE_TTL = NODE_FLAGS[NODE_FLAGS.index("--node-ttl") + 1]


def received(ws, timeout=10):
    return ws.recv(timeout=timeout)


def readyz(node):
    return http_get(admin_port(node), "/readyz")


def test_an_api_publication_on_one_node_reaches_subscribers_on_every_node(start_node):
    a, b = start_node(), start_node()
    with subscriber(a, "ann", ["news"]) as ann, subscriber(b, "bob", ["news"]) as bob:
        a.api.publish(PublishRequest(channel="news", data={"text": "hello"}))
        assert received(ann) == received(bob) == '{"text":"hello"}'
        b.api.publish(PublishRequest(channel="news", data="from b"))
        assert received(ann) == received(bob) == '"from b"'


def test_fifty_publications_arrive_on_the_other_node_complete_and_in_order(start_node):
    a, b = start_node(), start_node()
    with subscriber(b, "bob", ["feed"]) as bob:
        for number in range(50):
            a.api.publish(PublishRequest(channel="feed", data=number))
        assert [received(bob) for _ in range(50)] == [str(number) for number in range(50)]


def test_a_php_publication_on_one_node_reaches_subscribers_on_both(start_node):
    a, b = start_node(), start_node()
    with subscriber(a, "ann", ["room"]) as ann, subscriber(b, "bob", ["room"]) as bob, \
            connect(a.url("/c")) as publisher:
        assert php_command(publisher, "publish", channel="room", data="from PHP on a") \
            == (True, "")
        assert received(ann) == received(bob) == "from PHP on a"


def test_presence_channels_and_info_answer_for_every_node(start_node):
    a, b = start_node(), start_node()
    with subscriber(a, "ann", ["chat:1", "chat:2"], info={"name": "Ann"}), \
            subscriber(b, "ann", ["chat:1"]), subscriber(b, "bob", ["news"]):
        for node in (a, b):
            assert_api_sees_ann_twice_and_bob(node.api)

        def counts():
            nodes = a.api.info(InfoRequest()).nodes
            return sorted((node.num_clients, node.num_users, node.num_channels, node.num_subs)
                          for node in nodes)
        # The other node's counts are as of its last refresh (every --node-ttl / 3).
        wait_until(lambda: counts() == [(1, 1, 2, 2), (2, 2, 2, 2)], int(NODE_TTL) * 2,
                   lambda: "info counts %s" % counts())
    wait_until(lambda: a.api.channels(ChannelsRequest()).channels == {}, 10,
               "every channel gone with its subscribers, on every node")


def test_subscribe_unsubscribe_and_disconnect_by_user_act_on_every_node(start_node):
    a, b = start_node(), start_node()
    with subscriber(a, "ann") as on_a, subscriber(b, "ann") as on_b, \
            subscriber(b, "bob") as bob:
        a.api.subscribe(SubscribeRequest(user="ann", channel="room"))
        wait_until(lambda: len(a.api.presence(PresenceRequest(channel="room")).presence) == 2,
                   10, "both of ann's connections in room")
        b.api.publish(PublishRequest(channel="room", data="one"))
        assert received(on_a) == received(on_b) == '"one"'
        b.api.unsubscribe(UnsubscribeRequest(user="ann", channel="room"))
        wait_until(lambda: a.api.channels(ChannelsRequest()).channels == {}, 10,
                   "room left on both nodes")
        b.api.disconnect(DisconnectRequest(user="ann", disconnect=Disconnect(
            code=4001, reason="account closed")))
        for ws in (on_a, on_b):
            assert closed_with(ws) == (4001, "account closed")
        a.api.subscribe(SubscribeRequest(user="bob", channel="still-here"))
        wait_until(lambda: client_in(a, "still-here", "bob"), 10, "bob subscribed")
        a.api.publish(PublishRequest(channel="still-here", data="bob stays"))
        assert received(bob) == '"bob stays"'


def test_a_killed_node_leaves_presence_and_info_within_the_node_ttl(start_node):
    a, b = start_node(), start_node()
    with subscriber(a, "ann", ["room"]), subscriber(b, "bob", ["room"]):
        wait_until(lambda: len(a.api.info(InfoRequest()).nodes) == 2, 10, "two nodes")
        b.signal(signal.SIGKILL)
        b.process.wait(10)
        wait_until(lambda: [entry.user for entry in
                            a.api.presence(PresenceRequest(channel="room")).presence.values()]
                   == ["ann"], int(NODE_TTL) + 5, "bob's entry expired")
        [node] = a.api.info(InfoRequest()).nodes
        assert node.num_clients == 1
        assert a.api.channels(ChannelsRequest()).channels["room"].num_clients == 1
    assert "Traceback" not in stopped_log(a)


def test_a_node_that_stops_leaves_presence_and_info_as_it_goes(start_node):
    a, b = start_node(), start_node("--shutdown-timeout", "0.5")
    with subscriber(a, "ann", ["room"]), subscriber(b, "bob", ["room"]):
        wait_until(lambda: len(a.api.info(InfoRequest()).nodes) == 2, 10, "two nodes")
        log = stop_cleanly(b)  # SIGTERM: its connections end (1001), then its entries go
        assert [entry.user for entry in
                a.api.presence(PresenceRequest(channel="room")).presence.values()] == ["ann"]
        assert len(a.api.info(InfoRequest()).nodes) == 1
    assert "broker" not in log.replace("through Redis at", "")  # no complaint on the way out


def test_with_workers_each_worker_is_a_node_and_the_arbiter_serves_the_api(start_node):
    node = start_node("--workers", "2")
    other = start_node()
    with contextlib.ExitStack() as stack:
        # Subscribers until both workers hold some (bounded), and one on the other node.
        clients = []
        for number in range(40):
            clients.append(stack.enter_context(subscriber(node, "user%d" % number, ["all"])))
            if len({worker_holding(node, ws.socket) for ws in clients}) == 2:
                break
        assert len({worker_holding(node, ws.socket) for ws in clients}) == 2
        clients.append(stack.enter_context(subscriber(other, "other", ["all"])))
        other.api.publish(PublishRequest(channel="all", data="everyone"))
        assert [received(ws) for ws in clients] == ['"everyone"'] * len(clients)
        # Two workers and the other node: three nodes; the arbiter is none.
        assert len(node.api.info(InfoRequest()).nodes) == 3
        assert node.api.presence_stats(PresenceStatsRequest(channel="all")).num_clients \
            == len(clients)


# -- the --broker URL: a secret -----------------------------------------------------------

PASSWORD = "pass-word-of-the-redis-tests"


@pytest.mark.parametrize("url,complaint", [
    ("http://:%s@127.0.0.1:6379/0" % PASSWORD, "'http://...' is not a Redis URL"),
    ("redis://:%s@127.0.0.1:port/0" % PASSWORD, "is not a Redis URL"),
    ("redis://:%s@/0" % PASSWORD, "redis://:6379/0: no host"),
    ("redis://:%s@127.0.0.1:6379/zero" % PASSWORD,
     "redis://127.0.0.1:6379/zero: the path must be a database number"),
    ("unix://:%s@" % PASSWORD, "unix://: no socket path"),
])
def test_a_bad_broker_url_stops_start_up_with_one_line_without_the_password(url, complaint):
    for run in (run_cli("-e", "php", "-s", "conf/echo.php", "--broker", url),
                run_cli("-e", "php", "-s", "conf/echo.php", env={"WSS_CONFIG_BROKER": url})):
        assert run.returncode == 2
        assert run.stderr.count("\n") == 1 and complaint in run.stderr, run.stderr
        assert PASSWORD not in run.stderr + run.stdout


def test_the_broker_url_and_password_reach_neither_php_nor_the_log(start_bridge, redis_server):
    redis_server.command("CONFIG", "SET", "requirepass", PASSWORD)
    url = "redis://:%s@127.0.0.1:%d/0" % (PASSWORD, redis_server.port)
    bridge = start_bridge("--log-level", "debug", "--admin-port", "0", env={
        "WSS_CONFIG_BROKER": url, "APP_REDIS_URL": url, "APP_REDIS_PASSWORD": PASSWORD})
    wait_until(lambda: ready(bridge), 10, "node ready (the password let it in)")
    environment = php_environment(bridge.url("/"), full=True)
    for name, text in environment.items():
        assert PASSWORD not in text and url not in text, name
    log = stopped_log(bridge)
    assert PASSWORD not in log
    assert "through Redis at redis://127.0.0.1:%d/0" % redis_server.port in log
    assert "not passed to PHP: APP_REDIS_PASSWORD, APP_REDIS_URL" in log


def test_nodes_share_channels_over_a_redis_that_speaks_tls_only(start_node, start_bridge,
                                                                tls_redis_server):
    """rediss:// with the Redis's CA given in the URL (``?ssl_ca_certs=``); without it the
    certificate is not trusted and the node says so on /readyz."""
    a, b = (start_node(broker=tls_redis_server.url) for _ in range(2))
    with subscriber(b, "bob", ["news"]) as bob:
        a.api.publish(PublishRequest(channel="news", data="over TLS"))
        assert bob.recv(timeout=10) == '"over TLS"'
    untrusting = start_bridge("--broker", tls_redis_server.url.partition("?")[0], *NODE_FLAGS)
    wait_until(lambda: "certificate verify failed" in readyz(untrusting)[1], 10,
               "/readyz saying the certificate is not trusted")
    assert readyz(untrusting)[0] == 503


def test_what_is_not_greenbridges_on_its_redis_channels_is_dropped_with_a_line_or_two(
        start_node, redis_server):
    """Another program (or a bug) publishing on greenbridge's Redis channels: each message
    is dropped, the log says so at most once a second (no traceback), and the node goes
    on delivering."""
    node = start_node()
    strangers = [("greenbridge.ch.news", b"not a greenbridge message"),
                 ("greenbridge.ch.news", b"12:e:\x09an unknown kind"),
                 ("greenbridge.ch.news", b"twelve:e:\x00text"),
                 ("greenbridge.control", b"{not json"),
                 ("greenbridge.control", b'{"op": "disconnect", "args": [1]}'),
                 ("greenbridge.control", b'{"op": "explode", "args": []}')]
    with subscriber(node, "ann", ["news"]) as ann:
        for _ in range(20):
            for channel, message in strangers:
                assert redis_server.command("PUBLISH", channel, message) == b":1\r\n"
        node.api.publish(PublishRequest(channel="news", data="still here"))
        assert received(ann) == '"still here"'
    log = stopped_log(node)
    assert "Traceback" not in log
    dropped = [line for line in log.splitlines() if "malformed" in line]
    assert 1 <= len(dropped) <= 3, dropped
