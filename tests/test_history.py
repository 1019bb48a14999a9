"""--history-size / --history-ttl and the server API's history methods, driven by the real
``cent`` client against a real bridge (Centrifugo v5's shapes: publish's offset and epoch,
history with limit, since and reverse, 112 for another epoch, history_remove).
"""

import base64
import json

import pytest
from cent import (BroadcastRequest, HistoryRemoveRequest, HistoryRequest, PublishRequest,
                  StreamPosition)
from cent.exceptions import CentApiResponseError

from support import REQUIRED, run_cli, stopped_log, wait_until
import test_server_api
from test_server_api import api_post

api_bridge = test_server_api.api_bridge  # the fixture: a bridge with the API and cent


def history(bridge, channel, **fields):
    return bridge.api.history(HistoryRequest(channel=channel, **fields))


def publish(bridge, channel, data):
    return bridge.api.publish(PublishRequest(channel=channel, data=data))


def offsets(result):
    return [publication.offset for publication in result.publications]


def api_error(call):
    with pytest.raises(CentApiResponseError) as refusal:
        call()
    return refusal.value.code, refusal.value.message


def test_publish_answers_offsets_in_one_epoch_and_history_returns_them(api_bridge):
    bridge = api_bridge("--history-size", "10")
    results = [publish(bridge, "news", {"n": n}) for n in range(1, 4)]
    assert [result.offset for result in results] == [1, 2, 3]
    epoch = results[0].epoch
    assert epoch and all(result.epoch == epoch for result in results)
    assert publish(bridge, "other", "x").offset == 1  # each channel counts its own

    position_only = history(bridge, "news")  # no limit: only the stream's position
    assert (position_only.publications, position_only.offset, position_only.epoch) == \
        ([], 3, epoch)
    everything = history(bridge, "news", limit=-1)
    assert [p.data for p in everything.publications] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert offsets(everything) == [1, 2, 3]
    assert offsets(history(bridge, "news", limit=2)) == [1, 2]
    assert offsets(history(bridge, "news", limit=2, reverse=True)) == [3, 2]
    since_1 = StreamPosition(offset=1, epoch=epoch)
    assert offsets(history(bridge, "news", limit=-1, since=since_1)) == [2, 3]
    assert offsets(history(bridge, "news", limit=1, since=since_1)) == [2]
    assert offsets(history(bridge, "news", limit=-1, reverse=True,
                           since=StreamPosition(offset=3, epoch=epoch))) == [2, 1]
    assert offsets(history(bridge, "news", limit=-1,
                           since=StreamPosition(offset=3, epoch=epoch))) == []

    code, message = api_error(lambda: history(
        bridge, "news", limit=-1, since=StreamPosition(offset=1, epoch="another")))
    assert (code, message) == (112, "unrecoverable position")


def test_history_answers_each_kind_as_published(api_bridge):
    bridge = api_bridge("--history-size", "10")
    publish(bridge, "kinds", {"a": [1, 2.5]})
    status, body = api_post(bridge, "publish", json.dumps(
        {"channel": "kinds", "b64data": base64.b64encode(b"\x00\xff").decode()}).encode())
    assert status == 200 and json.loads(body)["result"]["offset"] == 2
    status, body = api_post(bridge, "history", b'{"channel": "kinds", "limit": -1}')
    result = json.loads(body)["result"]
    assert result["publications"] == [{"data": {"a": [1, 2.5]}, "offset": 1},
                                      {"b64data": "AP8=", "offset": 2}]


def test_broadcast_answers_each_channels_position(api_bridge):
    bridge = api_bridge("--history-size", "10")
    publish(bridge, "b", "first")
    answer = bridge.api.broadcast(BroadcastRequest(channels=["a", "b"], data="x"))
    assert [response.result.offset for response in answer.responses] == [1, 2]
    assert answer.responses[0].result.epoch != answer.responses[1].result.epoch


def test_history_keeps_the_last_history_size_publications(api_bridge):
    bridge = api_bridge("--history-size", "3")
    for n in range(1, 8):
        publish(bridge, "trim", n)
    result = history(bridge, "trim", limit=-1)
    assert (offsets(result), [p.data for p in result.publications], result.offset) == \
        ([5, 6, 7], [5, 6, 7], 7)


def test_history_expires_history_ttl_after_the_last_publication_but_the_position_stays(
        api_bridge):
    bridge = api_bridge("--history-size", "10", "--history-ttl", "0.5")
    epoch = publish(bridge, "brief", "a").epoch
    publish(bridge, "brief", "b")
    assert offsets(history(bridge, "brief", limit=-1)) == [1, 2]
    wait_until(lambda: history(bridge, "brief", limit=-1).publications == [], 10,
               "the publications expired")
    result = history(bridge, "brief", limit=-1)
    assert (result.offset, result.epoch) == (2, epoch)  # a client at 2 still resumes
    assert (publish(bridge, "brief", "c").offset, history(bridge, "brief").epoch) == (3, epoch)


def test_history_remove_drops_the_publications_and_keeps_the_position(api_bridge):
    bridge = api_bridge("--history-size", "10")
    epoch = publish(bridge, "gone", "a").epoch
    publish(bridge, "gone", "b")
    bridge.api.history_remove(HistoryRemoveRequest(channel="gone"))
    result = history(bridge, "gone", limit=-1)
    assert (result.publications, result.offset, result.epoch) == ([], 2, epoch)
    assert publish(bridge, "gone", "c").offset == 3


@pytest.mark.parametrize("flags", [(), ("--workers", "2")], ids=["one-process", "workers"])
def test_without_history_publish_answers_no_position_and_history_is_not_available(api_bridge,
                                                                                 flags):
    bridge = api_bridge(*flags)
    status, body = api_post(bridge, "publish", b'{"channel": "news", "data": 1}')
    assert json.loads(body) == {"result": {}}
    for method in ("history", "history_remove"):
        status, body = api_post(bridge, method, b'{"channel": "news"}')
        assert json.loads(body)["error"]["code"] == 108, body
    bridge.assert_serves()


@pytest.mark.parametrize("body,message", [
    ({"channel": "n", "limit": -2}, "limit must be -1"),
    ({"channel": "n", "limit": "all"}, "limit must be an integer"),
    ({"channel": "n", "reverse": 1}, "reverse must be true or false"),
    ({"channel": "n", "since": {"offset": 1}}, "since.epoch is required"),
    ({"channel": "n", "since": {"epoch": "e"}}, "since.offset is required"),
    ({"channel": "n", "since": {"offset": 0, "epoch": "e"}, "reverse": True},
     "since.offset must be over 0 in reverse"),
    ({"channel": "n", "since": 5}, "since must be an object"),
])
def test_bad_history_requests_are_refused_with_107(api_bridge, body, message):
    bridge = api_bridge("--history-size", "10")
    status, answer = api_post(bridge, "history", json.dumps(body).encode())
    error = json.loads(answer)["error"]
    assert status == 200 and error["code"] == 107 and message in error["message"], answer
    bridge.assert_serves()
    assert "Traceback" not in stopped_log(bridge)


def test_history_size_with_workers_and_no_broker_stops_start_up_with_one_line_and_status_2():
    result = run_cli(*REQUIRED, "--history-size", "10", "--workers", "2")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip().splitlines() == [
        "greenbridge: error: --history-size with --workers 2 needs --broker: in-memory "
        "history lives in one process"], result.stderr
