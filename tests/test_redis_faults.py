"""Redis faults under real nodes: a redis-server SIGKILLed and started again on the same
port, and one SIGSTOPped (a Redis that does not answer). Publications fail with an error
while Redis is away (never a success nobody receives), /readyz says why, clients and PHP
go on, the log says it in a line or two, and deliveries resume by themselves.
"""

import signal
import time

import pytest
from cent import PublishRequest
from cent.exceptions import CentApiResponseError
from websockets.sync.client import connect

from support import (admin_port, http_get, node_ready as ready, node_subscriber as subscriber,
                     php_command, scrape, stop_cleanly, value, wait_until)


def received(ws, timeout=10):
    return ws.recv(timeout=timeout)


def publish_refused(node, channel="news"):
    """The API's error for a publication made now (it must be refused)."""
    with pytest.raises(CentApiResponseError) as refused:
        node.api.publish(PublishRequest(channel=channel, data="lost"))
    return refused.value


def readyz(node):
    return http_get(admin_port(node), "/readyz")


def broker_up(node):
    return value(scrape(admin_port(node)), "greenbridge_broker_up")


def test_with_redis_killed_publishing_fails_and_everything_else_goes_on_until_it_is_back(
        start_node, redis_server):
    a, b = start_node(), start_node()
    with subscriber(a, "ann", ["news"]) as ann, subscriber(b, "bob", ["news"]) as bob:
        redis_server.kill()
        for node in (a, b):
            wait_until(lambda: readyz(node)[0] == 503, 10, "/readyz 503 without Redis")
            assert "broker unavailable" in readyz(node)[1]
            error = publish_refused(node)
            assert error.code == 100 and "broker unavailable" in error.message, error
            assert broker_up(node) == 0
        for attempt in range(20):
            publish_refused(a)
        with connect(a.url("/c")) as publisher:  # a new PHP connection starts and answers
            ok, why = php_command(publisher, "publish", channel="news", data="lost")
            assert not ok and "broker unavailable" in why
        a.assert_serves()
        b.assert_serves()

        redis_server.start()  # empty, on the same port, as after a crash without persistence
        for node in (a, b):
            wait_until(lambda: ready(node), 10, "ready within 10 s of Redis coming back")
            assert broker_up(node) == 1
        for number in range(50):
            (a if number % 2 else b).api.publish(PublishRequest(channel="news", data=number))
        expected = [str(number) for number in range(50)]
        assert [received(ann) for _ in expected] == expected  # none lost, none twice, in order
        assert [received(bob) for _ in expected] == expected
        a.api.publish(PublishRequest(channel="news", data="marker"))
        assert received(ann) == received(bob) == '"marker"'  # nothing more came between
    for node in (a, b):
        log = stop_cleanly(node)
        # Lost, back: no line per refused publication (PHP's refusal is its connection's).
        lines = [line for line in log.splitlines() if "greenbridge.channels: broker " in line]
        assert len(lines) == 2, "\n".join(lines)
        assert "unavailable" in lines[0] and "is back" in lines[1]


def test_a_redis_that_does_not_answer_fails_publications_within_the_timeout(start_node,
                                                                            redis_server):
    node = start_node()
    with subscriber(node, "ann", ["news"]) as ann:
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            error = publish_refused(node)
            # --broker-timeout 1: a generous bound on a shared machine, far below cent's 10 s.
            assert time.monotonic() - started < 5
            assert error.code == 100 and "broker unavailable" in error.message, error
            node.assert_serves()
            wait_until(lambda: readyz(node)[0] == 503, 10, "/readyz 503 while Redis is stuck")
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        wait_until(lambda: ready(node), 10, "ready again once Redis answers")
        node.api.publish(PublishRequest(channel="news", data="after"))
        assert received(ann) == '"after"'
    stop_cleanly(node)


def test_the_arbiter_of_workers_is_not_ready_without_redis(start_node, redis_server):
    node = start_node("--workers", "2")
    redis_server.kill()
    wait_until(lambda: readyz(node)[0] == 503, 10, "the arbiter's /readyz 503 without Redis")
    assert "broker unavailable" in readyz(node)[1]
    assert publish_refused(node).code == 100
    redis_server.start()
    wait_until(lambda: ready(node), 10, "ready again once Redis is back")
    stop_cleanly(node)
