"""The channel hub, publications and subscribers, without a server.

Subscribers write to real socket pairs; what a client would read is compared
with frames written out by hand (RFC 6455 section 5.2: server frames are
unmasked, FIN set, opcode 1 text / 2 binary).
"""

import os
import socket

import gevent
import gevent.socket
import pytest

from greenbridge.channels.hub import MAX_SUBSCRIPTIONS_PER_CLIENT, ChannelHub, SubscriptionError
from greenbridge.channel_names import ChannelNameError, check_channel
from greenbridge.channels.publication import PublicationError, checked_publication
from greenbridge.channels.subscriber import Subscriber

from support import wait_until


class SocketOutlet:
    """What a subscriber writes through, on the server end of a socket pair."""

    def __init__(self, sock):
        self.send_frames = self.send_rest = sock.sendall
        self._fd = sock.fileno()  # gevent keeps it non-blocking

    def send_frames_now(self, data):
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0


class Client:
    """A subscriber on one end of a socket pair; the test reads the other end as the client."""

    def __init__(self, hub, client_id, user="", envelope=False, queue_limit=1 << 20,
                 buffer_size=None):
        self.server_end, self.client_end = gevent.socket.socketpair()
        if buffer_size:
            for end, option in ((self.server_end, socket.SO_SNDBUF),
                                (self.client_end, socket.SO_RCVBUF)):
                end.setsockopt(socket.SOL_SOCKET, option, buffer_size)
        self.endings = []
        self.subscriber = Subscriber(client_id, user, None, envelope,
                                     SocketOutlet(self.server_end), self.endings.append,
                                     queue_limit)
        hub.add_client(self.subscriber)

    def read(self, size, timeout=5):
        data = b""
        with gevent.Timeout(timeout):
            while len(data) < size:
                chunk = self.client_end.recv(size - len(data))
                assert chunk, "the subscriber's socket closed after %r" % data
                data += chunk
        return data

    def close(self):
        self.server_end.close()
        self.client_end.close()


@pytest.fixture
def hub():
    return ChannelHub()


@pytest.fixture
def clients(hub):
    made = []

    def make(*args, **kwargs):
        made.append(Client(hub, *args, **kwargs))
        return made[-1]

    yield make
    for client in made:
        hub.remove_client(client.subscriber)
        client.close()


@pytest.mark.parametrize("name", ["chat", "chat:room-1", "user#42", "a" * 255,
                                  "news.sport/football", "$private", "x=1,y~2;z!*@+"])
def test_usable_channel_names(name):
    assert check_channel(name) == name


@pytest.mark.parametrize("name,says", [
    ("", "empty"), ("a" * 256, "longer than 255"), ("chat room", "character"),
    ("caf\u00e9", "character"), ('say"hi"', "character"), ("line\n", "character"),
    ("back\\slash", "character"), (42, "string"), (None, "string"),
])
def test_unusable_channel_names_are_refused_with_one_line(name, says):
    with pytest.raises(ChannelNameError) as refused:
        check_channel(name)
    assert says in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("data,kind,frame", [
    (b"hello", None, b"\x81\x05hello"),
    (b"\x00\x01\xff", None, b"\x82\x03\x00\x01\xff"),  # not UTF-8: binary
    (b'{"a":1}', "json", b'\x81\x07{"a":1}'),
    (b"hello", "binary", b"\x82\x05hello"),
    (b"x" * 200, None, b"\x81\x7e\x00\xc8" + b"x" * 200),
    (b"y" * 70000, "binary", b"\x82\x7f\x00\x00\x00\x00\x00\x01\x11\x70" + b"y" * 70000),
])
def test_a_publication_arrives_as_published(data, kind, frame):
    assert checked_publication("c", data, kind).frame(envelope=False) == frame


@pytest.mark.parametrize("data,kind,envelope", [
    (b"hello", None, b'{"channel":"chat","data":"hello"}'),
    (b'{"a": [1, 2]}', "json", b'{"channel":"chat","data":{"a": [1, 2]}}'),
    (b'{"a":1}', "text", b'{"channel":"chat","data":"{\\"a\\":1}"}'),
    ("caf\u00e9".encode(), None, '{"channel":"chat","data":"caf\u00e9"}'.encode()),
    (b"\x00\xff", None, b'{"channel":"chat","b64data":"AP8="}'),
])
def test_the_envelope_names_the_channel(data, kind, envelope):
    frame = checked_publication("chat", data, kind).frame(envelope=True)
    assert frame == b"\x81" + bytes([len(envelope)]) + envelope


@pytest.mark.parametrize("data,kind,says", [
    (b"\xff", "text", "UTF-8"), (b"\xff", "json", "UTF-8"), (b"{", "json", "does not parse"),
    (b"NaN", "json", "does not parse"), (b"x", "xml", "unknown publication type"),
])
def test_data_that_does_not_fit_its_type_is_refused(data, kind, says):
    with pytest.raises(PublicationError) as refused:
        checked_publication("c", data, kind)
    assert says in str(refused.value)


def test_every_subscriber_gets_the_same_frame_built_once(hub, clients):
    first, second, other = clients("a"), clients("b"), clients("c")
    hub.subscribe(first.subscriber, "news")
    hub.subscribe(second.subscriber, "news")
    hub.subscribe(other.subscriber, "sport")
    publication = checked_publication("news", b"hi")
    assert hub.publish(publication) == 2
    assert first.read(4) == second.read(4) == b"\x81\x02hi"
    assert publication.frame(False) is publication.frame(False)
    other.client_end.setblocking(False)
    with pytest.raises(BlockingIOError):
        other.client_end.recv(1)


def test_publications_arrive_in_order_and_none_twice(hub, clients):
    client = clients("a")
    hub.subscribe(client.subscriber, "c")
    for number in range(500):
        hub.publish(checked_publication("c", b"%03d" % number))
    expected = b"".join(b"\x81\x03%03d" % number for number in range(500))
    assert client.read(len(expected)) == expected


def test_subscriptions_end_with_their_connection_and_empty_channels_disappear(hub, clients):
    first, second = clients("a", user="ann"), clients("b", user="bob")
    for channel in ("x", "y"):
        hub.subscribe(first.subscriber, channel)
    hub.subscribe(second.subscriber, "y")
    assert hub.subscribe(first.subscriber, "x") is False  # already
    assert hub.channels() == {"x": 1, "y": 2}
    assert hub.channels("x*") == {"x": 1}
    assert hub.unsubscribe(first.subscriber, "x") is True
    assert hub.unsubscribe(first.subscriber, "x") is False
    assert hub.channels() == {"y": 2}
    hub.remove_client(first.subscriber)
    assert hub.channels() == {"y": 1}
    assert [s.client_id for s in hub.presence("y")] == ["b"]
    assert hub.num_clients == 1 and hub.num_users == 1
    assert hub.clients_of("bob") == [second.subscriber] and hub.clients_of("ann") == []
    hub.remove_client(second.subscriber)
    assert hub.channels() == {} and hub.publish(checked_publication("y", b"z")) == 0


def test_one_connection_holds_a_bounded_number_of_subscriptions(hub, clients):
    client = clients("a")
    for number in range(MAX_SUBSCRIPTIONS_PER_CLIENT):
        hub.subscribe(client.subscriber, "c%d" % number)
    with pytest.raises(SubscriptionError) as refused:
        hub.subscribe(client.subscriber, "one-more")
    assert "1024 subscriptions" in str(refused.value)
    with pytest.raises(ChannelNameError):
        hub.subscribe(client.subscriber, "bad name")


def test_a_subscriber_that_stops_reading_is_ended_and_the_others_get_everything(hub, clients):
    stalled = clients("stalled", queue_limit=64 * 1024, buffer_size=4096)
    readers = [clients("reader%d" % number) for number in range(3)]
    for client in (stalled, *readers):
        hub.subscribe(client.subscriber, "feed")
    payload = b"p" * 1000
    frame = b"\x81\x7e\x03\xe8" + payload
    received = {client: b"" for client in readers}

    def read_all(client):
        received[client] = client.read(200 * len(frame), timeout=30)

    reading = [gevent.spawn(read_all, client) for client in readers]
    for _ in range(200):
        hub.publish(checked_publication("feed", payload))
        gevent.sleep(0)  # as a server between requests: the writers get to run
    gevent.joinall(reading, raise_error=True)
    assert all(data == frame * 200 for data in received.values())
    assert [(ending.code, ending.reason) for ending in stalled.endings] \
        == [(1008, "subscriber too slow")]
    assert hub.subscribers_too_slow == 1
    assert [s.client_id for s in hub.presence("feed")] == ["reader0", "reader1", "reader2"]
    wait_until(lambda: stalled.subscriber.queued_bytes == 0, 5, "the stalled queue dropped")


def test_php_control_frames_name_the_publication_kinds_the_hub_knows():
    # modes.py spells the kinds out rather than import channels: they must stay the same.
    from greenbridge.modes import PUBLICATION_KINDS
    assert set(PUBLICATION_KINDS.values()) - {None} == {"text", "binary", "json"}
    for kind in ("text", "binary", "json"):
        assert checked_publication("c", b"1", kind).kind == kind
