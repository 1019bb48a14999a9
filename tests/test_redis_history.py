"""History in Redis (Centrifugo's semantics), read and written by the RedisBroker the server
API uses (no hub: as in the arbiter of --workers), against a real redis-server.

The keys are checked with the tests' own RESP client (RedisServer.command), not through
the broker: offsets are the stream's entry IDs, the epoch is the meta hash's.
"""

import pytest

from greenbridge.channels.broker import BrokerUnavailable, StreamPosition, UnrecoverablePosition
from greenbridge.channels.publication import BINARY, JSON, Publication
from greenbridge.channels.redis_broker import RedisBroker
from support import wait_until


@pytest.fixture
def history_broker(redis_server):
    """history_broker(size, ttl) -> an API-only RedisBroker keeping `size` publications."""
    made = []

    def make(size=5, ttl=60):
        made.append(RedisBroker(redis_server.url, 1.0, 3, history_size=size, history_ttl=ttl))
        return made[-1]
    yield make
    for broker in made:
        broker.close()


def publish(broker, count, channel="news", first=1):
    return [broker.publish(Publication(channel, b"%d" % number, JSON))
            for number in range(first, first + count)]


def offsets(page):
    return [publication.offset for publication in page.publications]


def test_publish_answers_offsets_in_one_epoch_and_history_keeps_the_last_n(history_broker,
                                                                          redis_server):
    broker = history_broker(size=5)
    assert broker.keeps_history and not history_broker(size=0).keeps_history
    positions = publish(broker, 7)
    epoch = positions[0].epoch
    assert positions == [StreamPosition(offset, epoch) for offset in range(1, 8)]
    assert redis_server.command("HGET", "greenbridge.meta.news", "e") \
        == b"$%d\r\n%s\r\n" % (len(epoch), epoch.encode())
    assert redis_server.command("XLEN", "greenbridge.history.news") == b":5\r\n"
    page = broker.history("news", limit=-1)
    assert offsets(page) == [3, 4, 5, 6, 7] and page.position == StreamPosition(7, epoch)
    assert [publication.data for publication in page.publications] == [b"3", b"4", b"5", b"6",
                                                                       b"7"]
    assert all(publication.epoch == epoch and publication.kind == JSON
               for publication in page.publications)


def test_limit_since_and_reverse(history_broker):
    broker = history_broker(size=10)
    epoch = publish(broker, 6)[0].epoch
    assert offsets(broker.history("news")) == []  # limit 0: the position only
    assert broker.history("news").position == StreamPosition(6, epoch)
    assert offsets(broker.history("news", limit=2)) == [1, 2]
    assert offsets(broker.history("news", limit=2, reverse=True)) == [6, 5]
    assert offsets(broker.history("news", limit=-1, since=StreamPosition(3, epoch))) \
        == [4, 5, 6]
    assert offsets(broker.history("news", limit=2, since=StreamPosition(3, epoch))) == [4, 5]
    assert offsets(broker.history("news", limit=-1, since=StreamPosition(6, epoch))) == []
    assert offsets(broker.history("news", limit=-1, since=StreamPosition(3, epoch),
                                  reverse=True)) == [2, 1]
    with pytest.raises(UnrecoverablePosition):
        broker.history("news", limit=-1, since=StreamPosition(3, "another"))


def test_an_empty_channel_has_an_epoch_its_first_publications_continue(history_broker):
    broker = history_broker()
    position = broker.history("quiet").position
    assert position.offset == 0 and position.epoch
    assert publish(broker, 1, "quiet") == [StreamPosition(1, position.epoch)]
    assert offsets(broker.history("quiet", limit=-1, since=position)) == [1]


def test_history_expires_after_the_ttl_but_offsets_and_epoch_stay(history_broker):
    broker = history_broker(ttl=0.5)  # --history-ttl takes fractions of a second
    epoch = publish(broker, 3)[0].epoch
    wait_until(lambda: broker.history("news", limit=-1).publications == [], 5,
               "the history expired after --history-ttl 0.5")
    assert broker.history("news").position == StreamPosition(3, epoch)
    assert publish(broker, 1, first=4) == [StreamPosition(4, epoch)]


def test_history_remove_keeps_the_position(history_broker):
    broker = history_broker()
    epoch = publish(broker, 3)[0].epoch
    broker.history_remove("news")
    page = broker.history("news", limit=-1)
    assert page.publications == [] and page.position == StreamPosition(3, epoch)


def test_a_redis_that_lost_everything_starts_a_new_epoch(history_broker, redis_server):
    broker = history_broker()
    old = publish(broker, 3)[-1]
    redis_server.kill()
    redis_server.start()
    wait_until(lambda: _publishes(broker), 5, "publishing again")
    position = broker.history("news").position
    assert position.epoch != old.epoch
    with pytest.raises(UnrecoverablePosition):
        broker.history("news", limit=-1, since=old)


def _publishes(broker):
    try:
        broker.publish(Publication("news", b"\x00\xff", BINARY))
    except BrokerUnavailable:
        return False
    return True


def test_publishers_at_once_each_get_the_answer_of_their_own_publication(history_broker):
    """Publications made at once share pipelines to Redis (redis_publisher.py): each
    publisher must get the offset of its own publication, as the stream keeps it."""
    import gevent

    broker = history_broker(size=1000)
    answers = {}

    def publisher(number):
        for sequence in range(25):
            data = b"%d-%d" % (number, sequence)
            answers[data] = broker.publish(Publication("news", data, BINARY)).offset

    gevent.joinall([gevent.spawn(publisher, number) for number in range(8)], raise_error=True)
    kept = {publication.data: publication.offset
            for publication in broker.history("news", limit=-1).publications}
    assert kept == answers and sorted(kept.values()) == list(range(1, 201))
