"""Channels from PHP: real PHP scripts subscribe their connections and publish through
Greenbridge.php (framed mode); real clients (python websockets) receive what the bridge
fans out. Expected bytes are written out here (README, "Message modes": control frames).
"""

import base64
import contextlib
import json
import os
import re
import struct

import pytest
from websockets.sync.client import connect

from support import (REPO, admin_port, closed_with, php_command, php_frame, scrape, value,
                     wait_until, worker_holding)

CHANNELS_PHP = os.path.join(REPO, "tests", "php", "channels.php")
RAW_CONTROL_PHP = os.path.join(REPO, "tests", "php", "raw_control.php")


def channels_bridge(start_bridge, *flags):
    """A bridge with channels.php on /c (framed) and raw_control.php on /raw; other paths
    echo (scenario.php, for assert_serves)."""
    return start_bridge("--admin-port", "0", "--route", "/c=%s,mode=framed" % CHANNELS_PHP,
                        "--route", "/raw=%s,mode=framed" % RAW_CONTROL_PHP, *flags)


command = php_command


@contextlib.contextmanager
def subscribed(bridge, *channels, path="/c"):
    """A client whose PHP script subscribed its connection to `channels`."""
    with connect(bridge.url(path)) as ws:
        for channel in channels:
            assert command(ws, "subscribe", channel=channel) == (True, "")
        yield ws


def channels_metric(bridge):
    return value(scrape(admin_port(bridge)), "greenbridge_channels")


def assert_no_traceback(bridge):
    assert "Traceback" not in bridge.log


# -- publishing from PHP -----------------------------------------------------------

def test_php_publication_reaches_the_subscriber_as_published(start_bridge):
    bridge = channels_bridge(start_bridge)
    with subscribed(bridge, "news") as subscriber, connect(bridge.url("/c")) as publisher:
        for fields in [dict(data="héllo 𝄞"),
                       dict(data='{"a": [1, 2.5], "b": "é"}', type="json"),
                       dict(hex="00ff10"), dict(data="abc", type="binary"),
                       dict(data="", type="text")]:
            assert command(publisher, "publish", channel="news", **fields) == (True, "")
        assert subscriber.recv(timeout=10) == "héllo 𝄞"
        assert subscriber.recv(timeout=10) == '{"a": [1, 2.5], "b": "é"}'  # the same JSON text
        assert subscriber.recv(timeout=10) == b"\x00\xff\x10"  # not UTF-8: binary
        assert subscriber.recv(timeout=10) == b"abc"  # the type given wins
        assert subscriber.recv(timeout=10) == ""


@pytest.mark.parametrize("fields,reason", [
    (dict(channel="bad channel", data="x"), "character outside"),
    (dict(channel="", data="x"), "must not be empty"),
    (dict(channel="c" * 256, data="x"), "longer than 255"),
    (dict(channel_hex="ff6e657773", data="x"), "character outside"),  # not UTF-8
    (dict(channel="news", data="{nope", type="json"), "json data does not parse"),
    (dict(channel="news", data="NaN", type="json"), "json data does not parse"),
    (dict(channel="news", hex="ff", type="text"), "text data must be valid UTF-8"),
    (dict(channel="news", data="x", repeat=1001), "publication over 1000 bytes"),
    (dict(channel="news", data="x", repeat=300000), "publication over 1000 bytes"),  # not held
], ids=["space", "empty", "long", "not-utf8-name", "bad-json", "nan", "bad-text",
        "just-too-big", "far-too-big"])
def test_refused_publication_tells_php_why_and_delivers_nothing(start_bridge, fields, reason):
    bridge = channels_bridge(start_bridge, "--max-payload-size", "1000")
    with subscribed(bridge, "news") as subscriber, connect(bridge.url("/c")) as publisher:
        ok, error = command(publisher, "publish", **fields)
        assert not ok and reason in error and "\n" not in error
        assert command(publisher, "publish", channel="news", data="after") == (True, "")
        assert subscriber.recv(timeout=10) == "after"  # nothing of the refused one came first
    bridge.wait_for_log(r"PHP's publish refused: .*%s" % re.escape(reason))
    assert_no_traceback(bridge)
    bridge.assert_serves()


@pytest.mark.parametrize("op", ["subscribe", "unsubscribe"])
def test_refused_subscription_tells_php_why(start_bridge, op):
    bridge = channels_bridge(start_bridge)
    with connect(bridge.url("/c")) as ws:
        ok, error = command(ws, op, channel="no spaces")
        assert not ok and "character outside" in error
        ok, error = command(ws, op, channel="x" * 2000)  # skipped unread: over 4 x 255 bytes
        assert not ok and "longer than 255" in error
        assert command(ws, op, channel="fine") == (True, "")
    assert_no_traceback(bridge)


def test_two_subscribers_get_every_publication_in_order_once(start_bridge):
    bridge = channels_bridge(start_bridge)
    with subscribed(bridge, "room") as first, subscribed(bridge, "room", "other") as second, \
            connect(bridge.url("/c")) as publisher:
        sent = ["message %d" % number for number in range(50)]
        for text in sent:
            assert command(publisher, "publish", channel="room", data=text) == (True, "")
        assert command(publisher, "publish", channel="other", data="end") == (True, "")
        assert [first.recv(timeout=10) for _ in sent] == sent
        assert [second.recv(timeout=10) for _ in sent] + [second.recv(timeout=10)] == \
            sent + ["end"]  # nothing twice: the next one is the last publication
        assert command(publisher, "publish", channel="room", data="last") == (True, "")
        assert first.recv(timeout=10) == "last"


def test_unsubscribed_connection_gets_nothing_more(start_bridge):
    bridge = channels_bridge(start_bridge)
    with subscribed(bridge, "a", "b") as subscriber, connect(bridge.url("/c")) as publisher:
        assert command(subscriber, "unsubscribe", channel="a") == (True, "")
        assert command(subscriber, "unsubscribe", channel="a") == (True, "")  # idempotent
        assert command(publisher, "publish", channel="a", data="not for you") == (True, "")
        assert command(publisher, "publish", channel="b", data="for you") == (True, "")
        assert subscriber.recv(timeout=10) == "for you"


def test_subscriptions_end_with_the_connection(start_bridge):
    bridge = channels_bridge(start_bridge)
    with subscribed(bridge, "two", "shared"):
        with subscribed(bridge, "one", "shared"):
            assert channels_metric(bridge) == 3
        wait_until(lambda: channels_metric(bridge) == 2, what="channel 'one' gone")
    wait_until(lambda: channels_metric(bridge) == 0, what="every channel gone")
    with subscribed(bridge, "one") as again, connect(bridge.url("/c")) as publisher:
        assert command(publisher, "publish", channel="one", data="fresh") == (True, "")
        assert again.recv(timeout=10) == "fresh"


def test_envelope_route_wraps_publications(start_bridge):
    bridge = channels_bridge(start_bridge, "--route",
                             "/wrapped=%s,mode=framed,envelope" % CHANNELS_PHP)
    with subscribed(bridge, "news", path="/wrapped") as wrapped, \
            subscribed(bridge, "news") as plain, connect(bridge.url("/c")) as publisher:
        assert command(publisher, "publish", channel="news", data="hé") == (True, "")
        assert command(publisher, "publish", channel="news", data='{"x": [1]}',
                       type="json") == (True, "")
        assert command(publisher, "publish", channel="news", hex="00ff") == (True, "")
        assert json.loads(wrapped.recv(timeout=10)) == {"channel": "news", "data": "hé"}
        assert json.loads(wrapped.recv(timeout=10)) == {"channel": "news", "data": {"x": [1]}}
        assert json.loads(wrapped.recv(timeout=10)) == {
            "channel": "news", "b64data": base64.b64encode(b"\x00\xff").decode()}
        assert [plain.recv(timeout=10) for _ in range(3)] == ["hé", '{"x": [1]}', b"\x00\xff"]


# -- the library ---------------------------------------------------------------------

def test_client_messages_read_while_waiting_for_a_reply_are_kept_in_order(start_bridge):
    bridge = channels_bridge(start_bridge)
    messages = ["one", b"\x00two", "three"]
    size = sum(5 + len(m if isinstance(m, bytes) else m.encode()) for m in messages)
    with connect(bridge.url("/c?do=held&bytes=%d" % size)) as ws:
        for message in messages:
            ws.send(message)
        assert json.loads(ws.recv(timeout=10)) == {"ok": True, "got": [
            ["text", b"one".hex()], ["binary", b"\x00two".hex()], ["text", b"three".hex()]]}


def test_user_is_null_without_a_token(start_bridge):
    bridge = channels_bridge(start_bridge)
    with connect(bridge.url("/c")) as ws:
        assert command(ws, "user") == (None, "")


def test_channels_outside_framed_mode_are_refused_by_the_library(start_bridge):
    bridge = start_bridge("--route", "/line=%s,mode=line" % CHANNELS_PHP, script=None)
    with connect(bridge.url("/line")) as ws:
        ok, error = command(ws, "subscribe", channel="news")
        assert not ok and "framed" in error


# -- control frames a broken PHP writes ------------------------------------------------

def reply(status, reason=b""):
    """A reply frame written out by hand: type 0x10, length, status byte, reason."""
    return (b"\x10" + struct.pack("!I", 1 + len(reason)) + bytes([status]) + reason).hex()


@pytest.mark.parametrize("sent,zeros,says", [
    (php_frame(0x1f, b"xyz"), 0, b"unknown control frame type 0x1f"),
    (php_frame(0x10, b"\x00"), 0, b"unknown control frame type 0x10"),  # a reply, from PHP
    (struct.pack("!BI", 0x11, 2000), 2000, b"channel name longer than 255 characters"),
    (php_frame(0x11, b"\xff\xfe"), 0, b"character outside"),
    (php_frame(0x13, b"\x00\x00"), 0, b"shorter than its 3-byte head"),
    (php_frame(0x13, b"\x07\x00\x01ax"), 0, b"unknown publication kind 0x07"),
    (php_frame(0x13, b"\x00\x00\x09abc"), 0, b"channel length 9 runs past its end"),
    (php_frame(0x13, b"\x01\x00\x01a\xff"), 0, b"text data must be valid UTF-8"),
    (struct.pack("!BI", 0x13, 200000), 200000, b"publication over 1000 bytes"),
], ids=["unknown-control", "reply-type", "long-subscribe", "not-utf8", "short-publish",
        "kind", "channel-length", "bad-text", "skipped-publish"])
def test_malformed_control_frame_is_refused_and_the_stream_goes_on(start_bridge, sent,
                                                                   zeros, says):
    bridge = channels_bridge(start_bridge, "--max-payload-size", "1000")
    if zeros:  # the zeros (sent after the hex) are the bad frame's payload
        path = "/raw?replies=1&zeros=%d&hex=%s" % (zeros, sent.hex())
    else:  # a good subscribe behind the bad frame is answered too
        path = "/raw?replies=2&hex=%s" % (sent + php_frame(0x11, b"ok")).hex()
    with connect(bridge.url(path)) as ws:
        first = bytes.fromhex(ws.recv(timeout=10))
        assert first[0] == 0x10 and first[5] == 0x01 and says in first[6:]  # refused
        assert struct.unpack("!I", first[1:5])[0] == len(first) - 5
        if not zeros:
            assert ws.recv(timeout=10) == reply(0x00)  # "10 00000001 00": ok
    bridge.wait_for_log(r"refused: .*%s" % re.escape(says.decode()))
    assert_no_traceback(bridge)
    bridge.assert_serves()


@pytest.mark.parametrize("sent,extra,complaint", [
    (php_frame(0x11, b"a") + php_frame(0x20, b"x"), "", "unknown type 0x20"),
    (php_frame(0x11, b"a") + php_frame(0xff, b""), "", "unknown type 0xff"),
    (struct.pack("!BI", 0x13, 100) + b"\x00\x00", "&exit=1", "PHP ended inside a frame"),
], ids=["type-0x20", "type-0xff", "ended-inside"])
def test_control_stream_that_cannot_be_trusted_ends_with_1011(start_bridge, sent, extra,
                                                               complaint):
    """A type outside the control range after a good control frame; a control frame cut."""
    bridge = channels_bridge(start_bridge)
    with connect(bridge.url("/raw?hex=%s%s" % (sent.hex(), extra))) as ws:
        assert closed_with(ws) == (1011, "PHP protocol error")
    line = bridge.wait_for_log(r".*%s.*" % re.escape(complaint)).group(0)
    assert line.count("\n") == 0
    assert_no_traceback(bridge)
    bridge.wait_no_php()
    bridge.assert_serves()


def test_with_two_workers_a_php_publication_reaches_subscribers_on_both(start_bridge):
    bridge = channels_bridge(start_bridge, "--workers", "2")
    with contextlib.ExitStack() as stack:
        # Clients whose scripts subscribed to "all", until both workers hold some (bounded).
        clients = {}
        for _ in range(40):
            ws = stack.enter_context(subscribed(bridge, "all"))
            clients.setdefault(worker_holding(bridge, ws.socket), []).append(ws)
            if len(clients) == 2:
                break
        assert len(clients) == 2
        publisher = stack.enter_context(connect(bridge.url("/c")))  # on either worker
        assert command(publisher, "publish", channel="all", data="from one worker") == (True, "")
        for ws in [ws for held in clients.values() for ws in held]:
            assert ws.recv(timeout=10) == "from one worker"
