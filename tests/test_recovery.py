"""Recovery: a client that comes back with the last offset and epoch it saw gets what it
missed, in order, before new publications, or is told explicitly that it cannot.

Real bridges, real ``websockets`` clients on a subscribe route (``recover=`` query
parameters), real PHP through Greenbridge.php (``subscribe($channel, $offset, $epoch)``),
publications through the real ``cent`` client. Every test runs once per broker in
BROKERS.
"""

import json
import os
import threading
from urllib.parse import quote

import jwt
import pytest
from cent import Client, PublishRequest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from support import REPO, admin_port, readme_snippet, stopped_log, wait_until

API_KEY = "the-api-key-of-the-recovery-tests"
SECRET = "the-token-secret-of-the-recovery-tests-0123"
CHANNELS_PHP = os.path.join(REPO, "tests", "php", "channels.php")

# The brokers every test runs on: name -> the flags that choose it, made from the test's
# request (which may start what the broker needs: request.getfixturevalue("...")). The
# in-process broker needs none; Redis needs a redis-server of the test's own.
BROKERS = {"in-process": lambda request: (),
           "redis": lambda request: ("--broker", request.getfixturevalue("redis_server").url)}


@pytest.fixture(params=sorted(BROKERS))
def broker_flags(request):
    return BROKERS[request.param](request)


@pytest.fixture
def recovery_bridge(broker_flags, start_bridge):
    """start(*flags): a bridge with the API, /live (envelope), /plain and PHP's channels.php on
    /php (framed, envelope), on the broker of this run."""
    def start(*flags):
        bridge = start_bridge(
            *broker_flags, "--admin-port", "0", "--api-key", API_KEY, "--token-secret",
            SECRET, "--subscribe-route", "/live,envelope", "--subscribe-route", "/plain",
            "--route", "/php=%s,mode=framed,envelope" % CHANNELS_PHP, *flags)
        bridge.api = Client("http://127.0.0.1:%d/api" % admin_port(bridge), API_KEY)
        return bridge
    return start


def token(channels=("feed",)):
    return jwt.encode({"sub": "reader", "channels": list(channels)}, SECRET, algorithm="HS256")


def live(bridge, *recover, channels=("feed",), path="/live"):
    query = "token=" + token(channels) + "".join("&recover=" + quote(each) for each in recover)
    return connect(bridge.url("%s?%s" % (path, query)), open_timeout=20)


def publish(bridge, data, channel="feed"):
    return bridge.api.publish(PublishRequest(channel=channel, data=data))


def message(ws):
    return json.loads(ws.recv(timeout=10))


class Publisher(threading.Thread):
    """Publishes 1, 2, 3... to `channel` through the API until stopped."""

    def __init__(self, bridge, channel="feed"):
        super().__init__(daemon=True)
        self._bridge, self._channel = bridge, channel
        self._stopping = threading.Event()
        self.count = 0
        self.error = None

    def run(self):
        try:
            while not self._stopping.is_set():
                publish(self._bridge, self.count + 1, self._channel)
                self.count += 1
        except Exception as error:  # the test asserts there was none
            self.error = error

    def stop(self):
        self._stopping.set()
        self.join(20)
        assert self.error is None and not self.is_alive(), self.error
        return self.count


def test_a_client_that_comes_back_gets_every_missed_publication_in_order_then_live_ones(
        recovery_bridge):
    bridge = recovery_bridge("--history-size", "100000")
    publisher = Publisher(bridge)
    publisher.start()
    with live(bridge) as ws:
        seen = [message(ws) for _ in range(20)]
    last = seen[-1]
    assert [each["data"] for each in seen] == [each["offset"] for each in seen]  # offset N is N
    missed_from = publisher.count  # publications keep coming while it is away and comes back
    with live(bridge, "feed:%d:%s" % (last["offset"], last["epoch"])) as ws:
        status = message(ws)
        assert status["channel"] == "feed" and status["recovered"] is True, status
        assert status["epoch"] == last["epoch"] and status["offset"] >= missed_from
        got = [message(ws)]
        while got[-1]["offset"] < status["offset"] + 50:  # 50 live ones after the missed
            got.append(message(ws))
        total = publisher.stop()
        while got[-1]["offset"] < total:
            got.append(message(ws))
    offsets = [each["offset"] for each in got]
    assert offsets == list(range(last["offset"] + 1, total + 1))  # none lost, none twice
    assert last["offset"] < status["offset"] < total  # some from history, some live
    assert [each["data"] for each in got] == offsets
    assert all(each["epoch"] == last["epoch"] and each["channel"] == "feed" for each in got)
    bridge.assert_serves()


def test_a_client_that_missed_nothing_is_recovered_and_gets_live_ones(recovery_bridge):
    bridge = recovery_bridge("--history-size", "10")
    position = publish(bridge, "a")
    with live(bridge, "feed:%d:%s" % (position.offset, position.epoch)) as ws:
        assert message(ws) == {"channel": "feed", "recovered": True, "offset": 1,
                               "epoch": position.epoch}
        publish(bridge, "b")
        assert message(ws) == {"channel": "feed", "data": "b", "offset": 2,
                               "epoch": position.epoch}


def test_another_epoch_is_told_and_the_client_gets_live_ones(recovery_bridge):
    bridge = recovery_bridge("--history-size", "10")
    position = [publish(bridge, n) for n in range(3)][-1]
    with live(bridge, "feed:1:deadbeef") as ws:
        assert message(ws) == {"channel": "feed", "recovered": False, "offset": 3,
                               "epoch": position.epoch, "reason": "epoch changed"}
        publish(bridge, "next")
        assert message(ws)["data"] == "next"  # nothing of the history came


def test_a_position_trimmed_out_of_history_is_told(recovery_bridge):
    bridge = recovery_bridge("--history-size", "3")
    position = [publish(bridge, n) for n in range(1, 11)][-1]  # 8, 9, 10 kept
    with live(bridge, "feed:6:%s" % position.epoch) as ws:
        assert message(ws) == {"channel": "feed", "recovered": False, "offset": 10,
                               "epoch": position.epoch, "reason": "history trimmed or expired"}
        publish(bridge, 11)
        assert message(ws)["data"] == 11
    with live(bridge, "feed:8:%s" % position.epoch) as ws:  # 9, 10 and 11 are all there
        assert message(ws)["recovered"] is True
        assert [message(ws)["data"] for _ in range(3)] == [9, 10, 11]


def test_history_expired_after_the_ttl_is_told(recovery_bridge):
    bridge = recovery_bridge("--history-size", "10", "--history-ttl", "0.5")
    position = publish(bridge, "a")
    publish(bridge, "b")

    def told():
        with live(bridge, "feed:1:%s" % position.epoch) as ws:
            return message(ws)

    status = told()
    assert status["recovered"] is True
    wait_until(lambda: told()["recovered"] is False, 10, "the history expired")
    assert told() == {"channel": "feed", "recovered": False, "offset": 2,
                      "epoch": position.epoch, "reason": "history trimmed or expired"}


def test_without_history_the_client_is_told_none_is_kept(recovery_bridge):
    bridge = recovery_bridge()
    with live(bridge, "feed:4:cafe") as ws:
        assert message(ws) == {"channel": "feed", "recovered": False,
                               "reason": "no history kept"}
        publish(bridge, "x")
        assert message(ws) == {"channel": "feed", "data": "x"}


def test_only_the_channels_asked_for_are_recovered(recovery_bridge):
    bridge = recovery_bridge("--history-size", "10")
    publish(bridge, "old", channel="other")
    position = publish(bridge, "f1")
    publish(bridge, "f2")
    with live(bridge, "feed:%d:%s" % (position.offset, position.epoch),
              channels=("feed", "other")) as ws:
        assert message(ws)["recovered"] is True
        assert message(ws)["data"] == "f2"
        publish(bridge, "new", channel="other")
        assert message(ws)["data"] == "new"  # "other" is subscribed, without its past


def test_a_channel_name_with_colons_is_split_from_the_right(recovery_bridge):
    bridge = recovery_bridge("--history-size", "10")
    position = publish(bridge, "a", channel="chat:room:1")
    publish(bridge, "b", channel="chat:room:1")
    with live(bridge, "chat:room:1:1:%s" % position.epoch, channels=("chat:room:1",)) as ws:
        assert message(ws)["recovered"] is True
        assert message(ws)["data"] == "b"


@pytest.mark.parametrize("path,recover,reason", [
    ("/live", "feed:1", "recover='feed:1': not <channel>:<offset>:<epoch>"),
    ("/live", "feed:one:abc", "recover='feed:one:abc': not <channel>:<offset>:<epoch>"),
    ("/live", "feed:-1:abc", "recover='feed:-1:abc': not <channel>:<offset>:<epoch>"),
    ("/live", "feed:1:", "recover='feed:1:': not <channel>:<offset>:<epoch>"),
    ("/live", "feed:1:a\nb", "recover='feed:1:a\\nb': not <channel>:<offset>:<epoch>"),
    ("/live", "news:1:abc", "recover='news:1:abc': not a channel of the token"),
    ("/plain", "feed:1:abc",
     "recover needs a subscribe route with envelope: plain messages carry no offsets"),
], ids=["no-epoch", "offset-not-a-number", "negative", "empty-epoch", "newline", "not-token's",
        "plain-route"])
def test_a_bad_recover_parameter_is_refused_with_400_and_one_line(recovery_bridge, path,
                                                                   recover, reason):
    bridge = recovery_bridge("--history-size", "10")
    with pytest.raises(InvalidStatus) as refusal:
        with live(bridge, recover, path=path):
            pass
    assert refusal.value.response.status_code == 400
    assert refusal.value.response.body.decode() == reason + "\n"
    bridge.assert_serves()
    log = stopped_log(bridge)
    assert log.count("400 Bad Request") == 1 and "Traceback" not in log, log


def test_the_same_channel_twice_is_refused_with_400(recovery_bridge):
    bridge = recovery_bridge("--history-size", "10")
    with pytest.raises(InvalidStatus) as refusal:
        with live(bridge, "feed:1:abc", "feed:2:abc"):
            pass
    assert refusal.value.response.status_code == 400
    assert b"the channel is given twice" in refusal.value.response.body


# -- from PHP ---------------------------------------------------------------------


def php_command(ws, **command):
    ws.send(json.dumps(command))
    while True:  # publications to the client come straight from the bridge, before the answer
        answer = message(ws)
        if answer.get("op") == command["op"]:
            return answer
        ws.missed.append(answer)


def php_client(bridge):
    ws = connect(bridge.url("/php"), open_timeout=20)
    ws.missed = []
    return ws


def test_php_recovers_its_client_through_the_library(recovery_bridge):
    bridge = recovery_bridge("--history-size", "10")
    position = [publish(bridge, n) for n in range(1, 6)][1]  # the client saw 1 and 2
    with php_client(bridge) as ws:
        answer = php_command(ws, op="subscribe", channel="feed", offset=position.offset,
                             epoch=position.epoch)
        assert answer["ok"] is True and answer["error"] == ""
        assert answer["recovery"] == {"channel": "feed", "recovered": True, "offset": 5,
                                      "epoch": position.epoch}
        assert [each["data"] for each in ws.missed] == [3, 4, 5]  # no status message: PHP's
        assert ws.missed[0] == {"channel": "feed", "data": 3, "offset": 3,
                                "epoch": position.epoch}
        publish(bridge, 6)
        assert message(ws)["data"] == 6


def test_php_is_told_when_it_cannot_recover(recovery_bridge):
    bridge = recovery_bridge("--history-size", "10")
    position = publish(bridge, "a")
    with php_client(bridge) as ws:
        answer = php_command(ws, op="subscribe", channel="feed", offset=1, epoch="another")
        assert answer["ok"] is True
        assert answer["recovery"] == {"channel": "feed", "recovered": False, "offset": 1,
                                      "epoch": position.epoch, "reason": "epoch changed"}
        assert ws.missed == []
        again = php_command(ws, op="subscribe", channel="feed", offset=1, epoch=position.epoch)
        assert again["ok"] is False and "already subscribed to feed" in again["error"]
        assert php_command(ws, op="subscribe", channel="plain")["recovery"] is None
        publish(bridge, "b")
        assert message(ws)["data"] == "b"
    bridge.assert_serves()
    assert "Traceback" not in stopped_log(bridge)


def test_the_readmes_php_recovery_example_recovers_or_says_reload(recovery_bridge, tmp_path):
    script = tmp_path / "news.php"
    script.write_text("<?php\nrequire getenv('WSS_PHP_LIB');\n"
                      "$client = Greenbridge\\Connection::connect();\n"
                      + readme_snippet("php-recovery")
                      + "\nwhile ($client->receive() !== null) {\n}\n")
    bridge = recovery_bridge("--history-size", "10", "--route",
                             "/news=%s,mode=framed,envelope" % script)
    position = [publish(bridge, n, channel="news") for n in range(1, 4)][0]
    with connect(bridge.url("/news?offset=1&epoch=" + position.epoch)) as ws:
        assert [message(ws)["data"] for _ in range(2)] == [2, 3]
        publish(bridge, 4, channel="news")
        assert message(ws)["data"] == 4  # and no reload before it
    with connect(bridge.url("/news?offset=1&epoch=another")) as ws:
        assert message(ws) == {"reload": True}
