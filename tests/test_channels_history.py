"""channels/history.py and the recovery flow (channels/recovery.py) fed directly: the
in-memory history's semantics on a clock the test moves, its memory swept without any
read, and recovery while publications keep arriving between the subscription and the
history read (what a broker across nodes has: its live stream lags the history).
"""

import json

import gevent
import pytest

from greenbridge.channels.broker import LocalBroker, StreamPosition, UnrecoverablePosition
from greenbridge.channels.history import ChannelHistory
from greenbridge.channels.hub import ChannelHub
from greenbridge.channels.publication import JSON, Publication
from greenbridge.channels.recovery import recover
from greenbridge.channels.subscriber import Subscriber

from support import wait_until


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def publication(channel, n):
    return Publication(channel, str(n).encode(), JSON)


def offsets(page):
    return [each.offset for each in page.publications]


def test_positions_count_per_channel_and_history_keeps_the_last_size():
    history = ChannelHistory(3, 60, clock=Clock())
    positions = [history.add(publication("a", n)) for n in range(5)]
    assert [position.offset for position in positions] == [1, 2, 3, 4, 5]
    assert len({position.epoch for position in positions}) == 1
    assert history.add(publication("b", 0)).offset == 1
    assert offsets(history.get("a", -1)) == [3, 4, 5]
    assert offsets(history.get("a", 2, reverse=True)) == [5, 4]
    epoch = positions[0].epoch
    assert offsets(history.get("a", -1, StreamPosition(3, epoch))) == [4, 5]
    assert offsets(history.get("a", -1, StreamPosition(5, epoch), reverse=True)) == [4, 3]
    assert history.get("a", 0).position == StreamPosition(5, epoch)
    with pytest.raises(UnrecoverablePosition):
        history.get("a", -1, StreamPosition(3, "other"))


def test_publications_expire_after_the_ttl_the_position_after_the_meta_ttl():
    clock = Clock()
    history = ChannelHistory(10, 60, meta_ttl=3600, clock=clock)
    epoch = history.add(publication("a", 1)).epoch
    clock.now += 59
    history.add(publication("a", 2))  # the TTL counts from the last publication
    clock.now += 59
    assert offsets(history.get("a", -1)) == [1, 2]
    clock.now += 2
    page = history.get("a", -1)
    assert (page.publications, page.position) == ([], StreamPosition(2, epoch))
    assert history.add(publication("a", 3)) == StreamPosition(3, epoch)
    clock.now += 3601
    history.sweep()
    assert len(history) == 0  # forgotten: a later position begins a new epoch
    position = history.add(publication("a", 4))
    assert position.offset == 1 and position.epoch != epoch


def test_remove_keeps_the_position():
    history = ChannelHistory(10, 60, clock=Clock())
    history.add(publication("a", 1))
    position = history.add(publication("a", 2))
    history.remove("a")
    page = history.get("a", -1)
    assert (page.publications, page.position) == ([], position)


def test_a_position_read_before_any_publication_is_kept_for_the_first_one():
    history = ChannelHistory(10, 60, clock=Clock())
    given = history.get("new", 0).position  # what a status message tells a client
    assert given.offset == 0
    assert history.add(publication("new", 1)) == StreamPosition(1, given.epoch)


def test_deadlines_stay_bounded_however_often_a_channel_comes_back():
    clock = Clock()
    history = ChannelHistory(10, 5, meta_ttl=3600, clock=clock)
    for _ in range(1000):  # published, expired, published again...
        history.add(publication("a", 1))
        clock.now += 6
        history.sweep()
    # White box: the heap of deadlines, the memory a channel's comings and goings could grow.
    assert len(history._deadlines) <= 2 * len(history) + 1


def test_expired_channels_are_swept_without_any_read():
    history = ChannelHistory(10, 0.05, meta_ttl=0.2)
    for channel in range(1000):
        history.add(Publication("c%d" % channel, b"x" * 1000, JSON))
    assert len(history) == 1000
    wait_until(lambda: len(history) == 0, 10, "every channel swept", pause=gevent.sleep)


# -- recovery while publications keep coming -------------------------------------------


class Outlet:
    """A client that takes everything at once: the text messages it got, decoded."""

    def __init__(self):
        self.data = b""

    def send_frames_now(self, data):
        self.data += data
        return len(data)

    def messages(self):
        messages, data = [], self.data
        while data:
            length = data[1] & 0x7F
            assert length < 126
            messages.append(json.loads(data[2:2 + length]))
            data = data[2 + length:]
        return messages


class LaggingBroker(LocalBroker):
    """An in-process broker whose live stream and history read let others run, as Redis'
    do: `during_live` and `during_history` publish meanwhile."""

    def __init__(self, hub, history):
        super().__init__(hub, history=history)
        self.during_live = self.during_history = ()

    def live(self, channel):
        for n in self.during_live:
            self.publish(publication(channel, n))

    def history(self, channel, limit, since=None, reverse=False):
        page = super().history(channel, limit, since, reverse)
        for n in self.during_history:  # published after the read: past the page's position
            self.publish(publication(channel, n))
        return page


def test_recovery_delivers_history_then_held_ones_past_it_none_lost_none_twice():
    hub = ChannelHub()
    broker = LaggingBroker(hub, ChannelHistory(100, 60))
    epoch = [broker.publish(publication("feed", n)) for n in range(1, 6)][0].epoch
    broker.during_live = (6, 7)  # held, and in the history read after them
    broker.during_history = (8, 9)  # held only
    outlet = Outlet()
    subscriber = Subscriber("c", "u", None, True, outlet, lambda ending: None, 1 << 20)
    hub.add_client(subscriber)
    recover(hub, broker, subscriber, "feed", StreamPosition(2, epoch), tell_client=True)
    broker.publish(publication("feed", 10))
    gevent.sleep(0)  # the loop writes what is queued
    status, *got = outlet.messages()
    assert status == {"channel": "feed", "recovered": True, "offset": 7, "epoch": epoch}
    assert [each["offset"] for each in got] == list(range(3, 11))
    assert [each["data"] for each in got] == list(range(3, 11))


def test_held_publications_count_against_the_queue_limit():
    hub = ChannelHub()
    broker = LaggingBroker(hub, ChannelHistory(100, 60))
    broker.during_live = range(100)
    ended = []
    subscriber = Subscriber("c", "u", None, True, Outlet(), ended.append, 1000)
    hub.add_client(subscriber)
    recover(hub, broker, subscriber, "feed", StreamPosition(0, "x"), tell_client=True)
    assert subscriber.fell_behind and len(ended) == 1
