"""Three greenbridge nodes over one real redis-server behind a real nginx running the shipped
conf/nginx-cluster.conf (only its addresses changed): clients land on every node without
sticky sessions, and a publication made through any node reaches all of them."""

import contextlib
import os

from cent import InfoRequest, PublishRequest
from websockets.sync.client import connect

from support import (NODE_TOKEN_SECRET, REPO, client_in, connection_token, free_port,
                     php_command, start_nginx, stop_process, wait_until)

CLUSTER_SITE = os.path.join(REPO, "conf", "nginx-cluster.conf")
SHIPPED_NODES = ("10.0.0.11:8080", "10.0.0.12:8080", "10.0.0.13:8080")


def cluster_site(port, nodes):
    """conf/nginx-cluster.conf listening on `port`, its upstream the `nodes` (their ports)."""
    site = open(CLUSTER_SITE).read()
    replacements = [("listen 80;", "listen 127.0.0.1:%d;" % port)] + [
        ("server %s " % shipped, "server 127.0.0.1:%d " % node.port)
        for shipped, node in zip(SHIPPED_NODES, nodes)]
    for old, new in replacements:
        assert old in site, "conf/nginx-cluster.conf no longer has %r" % old
        site = site.replace(old, new)
    return site


def clients_per_node(node):
    """num_clients of each node in `info`, by node, as `node` answers it."""
    return sorted(entry.num_clients for entry in node.api.info(InfoRequest()).nodes)


def test_three_nodes_behind_nginx_serve_as_one(start_node, tmp_path):
    nodes = [start_node() for _ in range(3)]
    port = free_port()
    nginx = start_nginx(tmp_path, cluster_site(port, nodes), port)
    try:
        with contextlib.ExitStack() as stack:
            # Six subscribers in turn through nginx: least_conn gives each node two.
            subscribers = []
            for number in range(6):
                user = "user-%d" % number
                token = connection_token(NODE_TOKEN_SECRET, user, ["lobby"])
                subscribers.append(stack.enter_context(
                    connect("ws://127.0.0.1:%d/live?token=%s" % (port, token))))
                wait_until(lambda: client_in(nodes[0], "lobby", user), 10,
                           "%s in the lobby's presence" % user)
            # info's counts are refreshed every third of --node-ttl.
            wait_until(lambda: clients_per_node(nodes[2]) == [2, 2, 2], 10,
                       "two clients on each of the three nodes")
            for publisher in nodes:
                publisher.api.publish(PublishRequest(channel="lobby",
                                                     data="via %d" % publisher.port))
                for subscriber in subscribers:
                    assert subscriber.recv(timeout=10) == '"via %d"' % publisher.port
            # PHP on whichever node nginx picks publishes to everyone.
            with connect("ws://127.0.0.1:%d/c" % port) as php:
                assert php_command(php, "publish", channel="lobby", data="from PHP") == (True, "")
                for subscriber in subscribers:
                    assert subscriber.recv(timeout=10) == "from PHP"
    finally:
        stop_process(nginx, timeout=15)
