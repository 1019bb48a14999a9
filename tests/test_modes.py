"""The message-mode codecs on their own (no sockets): what PHP gets and how its bytes are cut."""

import struct

import pytest

from greenbridge import modes
from support import php_frame


def feed_bytewise(decoder, data):
    events = []
    for index in range(len(data)):
        events += decoder.feed(data[index:index + 1])
    return events


def plain(events):
    """Events with a Close as ("close", code, reason): compared by its fields, not by the
    __eq__ of the code under test."""
    return [("close", event.code, event.reason) if isinstance(event, modes.Close) else event
            for event in events]


def test_client_messages_encoded_per_mode():
    assert modes.encode_message("raw", 0x1, b"hi") == b"hi"
    assert modes.encode_message("line", 0x1, b"hi") == b"hi\n"
    assert modes.encode_message("framed", 0x1, "hé".encode()) == b"\x01\x00\x00\x00\x03h\xc3\xa9"
    assert modes.encode_message("framed", 0x2, b"") == b"\x02\x00\x00\x00\x00"


def test_close_frames_for_php():
    assert modes.encode_close(1000, "bye") == b"\x08\x00\x00\x00\x05\x03\xe8bye"
    assert modes.encode_close(1005, "") == b"\x08\x00\x00\x00\x00"


def test_raw_decoder_passes_reads_as_binary():
    decoder = modes.decoder("raw", 10)
    assert decoder.feed(b"abc") == [(0x2, b"abc")]
    assert decoder.feed(b"") == []


def test_line_decoder_cuts_lines_and_types_them():
    decoder = modes.decoder("line", 100)
    assert decoder.feed(b"one\ntw") == [(0x1, b"one")]
    assert decoder.feed(b"o\n\n\xff\xfe\nh\xc3") == [(0x1, b"two"), (0x1, b""), (0x2, b"\xff\xfe")]
    assert decoder.feed(b"\xa9\n") == [(0x1, "hé".encode())]


def test_line_decoder_same_result_bytewise():
    data = b"alpha\nbeta\n\xed\xa0\x80\n"  # the last line is a UTF-16 surrogate: not UTF-8
    assert feed_bytewise(modes.decoder("line", 100), data) == \
        [(0x1, b"alpha"), (0x1, b"beta"), (0x2, b"\xed\xa0\x80")]


@pytest.mark.parametrize("chunks", [[b"x" * 11], [b"x" * 6, b"x" * 5], [b"x" * 11 + b"\n"]])
def test_line_over_the_limit_is_1009(chunks):
    decoder = modes.decoder("line", 10)
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    assert len(events) == 1 and isinstance(events[0], modes.PhpProtocolError)
    assert events[0].code == 1009


def test_line_at_the_limit_passes():
    assert modes.decoder("line", 10).feed(b"x" * 10 + b"\n") == [(0x1, b"x" * 10)]


def test_framed_decoder_whole_and_bytewise():
    data = (php_frame(0x1, "héllo".encode()) + php_frame(0x2, b"\x00\xff") + php_frame(0x1, b"")
            + php_frame(0x8, b"\x0f\xa0going"))
    expected = [(0x1, "héllo".encode()), (0x2, b"\x00\xff"), (0x1, b""), ("close", 4000, "going")]
    assert plain(modes.decoder("framed", 100).feed(data)) == expected
    assert plain(feed_bytewise(modes.decoder("framed", 100), data)) == expected


def test_framed_close_without_code():
    assert plain(modes.decoder("framed", 100).feed(php_frame(0x8, b""))) == [("close", 1005, "")]


def test_framed_large_frame_in_pieces():
    payload = bytes(range(256)) * 4096
    decoder = modes.decoder("framed", len(payload))
    data = php_frame(0x2, payload)
    events = []
    for start in range(0, len(data), 65536):
        events += decoder.feed(data[start:start + 65536])
    assert events == [(0x2, payload)]
    assert decoder.pending == 0


@pytest.mark.parametrize("data,complaint", [
    (php_frame(0x3, b"x"), "unknown type 0x03"),
    (php_frame(0x0, b""), "unknown type 0x00"),
    (struct.pack("!BI", 0x2, 101), "binary frame of 101 bytes (over 100)"),
    (struct.pack("!BI", 0x2, 2 ** 32 - 1), "binary frame of 4294967295 bytes (over 100)"),
    (struct.pack("!BI", 0x8, 126), "close frame of 126 bytes"),
    (php_frame(0x1, b"\xff"), "text frame that is not UTF-8"),
    (php_frame(0x1, b"\xed\xa0\x80"), "not UTF-8"),
    (php_frame(0x8, b"\x03"), "close frame with a 1-byte payload"),
    (php_frame(0x8, b"\x03\xed"), "invalid close code 1005"),
    (php_frame(0x8, b"\x00\x05"), "invalid close code 5"),
    (php_frame(0x8, b"\x03\xe8\xff"), "reason that is not UTF-8"),
], ids=["type", "type-zero", "too-long", "longest", "close-too-long", "utf8", "surrogate",
        "close-1-byte", "close-1005", "close-code", "close-reason"])
def test_framed_errors_are_1011_and_say_what_was_wrong(data, complaint):
    [error] = modes.decoder("framed", 100).feed(data)
    assert isinstance(error, modes.PhpProtocolError)
    assert error.code == 1011
    assert complaint in str(error)
    assert error.client_reason == "PHP protocol error"


def test_messages_before_an_error_are_kept():
    *good, error = modes.decoder("framed", 100).feed(php_frame(0x1, b"ok") + php_frame(0x7, b""))
    assert good == [(0x1, b"ok")] and isinstance(error, modes.PhpProtocolError)
    *good, error = modes.decoder("line", 3).feed(b"one\n" + b"x" * 4)
    assert good == [(0x1, b"one")] and error.code == 1009


def test_php_ending_inside_a_frame_or_line_is_an_error():
    framed = modes.decoder("framed", 100)
    assert framed.feed(php_frame(0x1, b"ok") + php_frame(0x2, b"cut")[:6]) == [(0x1, b"ok")]
    [error] = framed.end()
    assert error.code == 1011 and str(error) == "PHP ended inside a frame; 6 bytes not delivered"
    line = modes.decoder("line", 100)
    assert line.feed(b"one\nno newline") == [(0x1, b"one")]
    [error] = line.end()
    assert error.code == 1011 and str(error) == "PHP ended inside a line; 10 bytes not delivered"
    assert modes.decoder("framed", 100).end() == modes.decoder("line", 100).end() == []
    assert modes.decoder("raw", 100).end() == []


# -- control frames (README, "Message modes": type, length, payload written out by hand) ----

def request_fields(event):
    assert isinstance(event, modes.ControlRequest), event
    return event.action, event.channel, event.data, event.kind, event.refusal


def test_replies_for_php():
    assert modes.encode_reply() == b"\x10\x00\x00\x00\x01\x00"
    assert modes.encode_reply("no: é") == b"\x10\x00\x00\x00\x07\x01no: \xc3\xa9"
    assert modes.encode_reply(None, b'{"a":1}') == b'\x10\x00\x00\x00\x08\x00{"a":1}'


@pytest.mark.parametrize("data,position", [
    (b"\x11\x00\x00\x00\x10chat\x00\x00\x00\x00\x00\x00\x00\x01\x05abcd", (261, "abcd")),
    (b"\x11\x00\x00\x00\x10chat\x00\xff\xff\xff\xff\xff\xff\xff\xffe9fa",
     (2 ** 64 - 1, "e9fa")),
])
def test_a_subscribe_frame_may_carry_a_position(data, position):
    data = data[:1] + struct.pack("!I", len(data) - 5) + data[5:]  # the length as built
    for events in (modes.decoder("framed", 100).feed(data),
                   feed_bytewise(modes.decoder("framed", 100), data)):
        assert len(events) == 1 and events[0].action == "subscribe"
        assert (events[0].channel, events[0].position, events[0].refusal) == \
            ("chat", position, None)


@pytest.mark.parametrize("position", [b"\x00\x00\x00\x00\x00\x00\x00\x01",  # no epoch
                                      b"\x00" * 8 + b"\xc3\xa9",  # not ASCII
                                      b"\x00" * 8 + b"e" * 65])  # too long
def test_a_bad_position_is_refused_and_the_stream_goes_on(position):
    payload = b"chat\x00" + position
    events = modes.decoder("framed", 10).feed(
        b"\x11" + struct.pack("!I", len(payload)) + payload + b"\x01\x00\x00\x00\x02ok")
    assert events[0].action == "subscribe" and "position is not" in events[0].refusal
    assert events[1:] == [(0x1, b"ok")]


@pytest.mark.parametrize("data,fields", [
    (b"\x11\x00\x00\x00\x04chat", ("subscribe", "chat", b"", None, None)),
    (b"\x12\x00\x00\x00\x04chat", ("unsubscribe", "chat", b"", None, None)),
    (b"\x13\x00\x00\x00\x09\x00\x00\x04chat\xff\x00",
     ("publish", "chat", b"\xff\x00", None, None)),
    (b"\x13\x00\x00\x00\x08\x01\x00\x01ahi\xc3\xa9", ("publish", "a", b"hi\xc3\xa9", "text", None)),
    (b"\x13\x00\x00\x00\x06\x02\x00\x01a{}", ("publish", "a", b"{}", "binary", None)),
    (b"\x13\x00\x00\x00\x06\x03\x00\x01a{}", ("publish", "a", b"{}", "json", None)),
    (b"\x13\x00\x00\x00\x04\x00\x00\x01a", ("publish", "a", b"", None, None)),
    (b"\x11\x00\x00\x00\x02\xff\xfe", ("subscribe", "\ufffd\ufffd", b"", None, None)),
])
def test_control_frames_decoded(data, fields):
    for events in (modes.decoder("framed", 100).feed(data),
                   feed_bytewise(modes.decoder("framed", 100), data)):
        assert len(events) == 1 and request_fields(events[0]) == fields


@pytest.mark.parametrize("data,action,says", [
    (b"\x1f\x00\x00\x00\x01x", None, "unknown control frame type 0x1f"),
    (b"\x10\x00\x00\x00\x01\x00", None, "unknown control frame type 0x10"),
    (b"\x13\x00\x00\x00\x02\x00\x00", "publish", "shorter than its 3-byte head"),
    (b"\x13\x00\x00\x00\x04\x04\x00\x01a", "publish", "unknown publication kind 0x04"),
    (b"\x13\x00\x00\x00\x05\x00\x00\x03ab", "publish", "channel length 3 runs past its end"),
    (b"\x13\x00\x00\x00\x0f\x00\x00\x01a" + b"x" * 11, "publish", "publication over 10 bytes"),
])
def test_malformed_control_frames_refused(data, action, says):
    events = modes.decoder("framed", 10).feed(data + b"\x01\x00\x00\x00\x02ok")
    assert request_fields(events[0])[0] == action and says in events[0].refusal
    assert events[1:] == [(0x1, b"ok")]  # the stream goes on behind it


@pytest.mark.parametrize("data,says", [
    (b"\x13" + struct.pack("!I", 3 + 1020 + 10 + 1), "publication over 10 bytes"),
    # A subscribe has room for a position after the name: NUL, 8 bytes, a 64-byte epoch.
    (b"\x11" + struct.pack("!I", 1020 + 73 + 1), "channel name longer than 255 characters"),
    (b"\x12" + struct.pack("!I", 1021), "channel name longer than 255 characters"),
    (b"\x1e" + struct.pack("!I", 300000), "unknown control frame type 0x1e"),
])
def test_oversized_control_frame_is_skipped_unheld_then_refused(data, says):
    length = struct.unpack("!I", data[1:])[0]
    decoder = modes.decoder("framed", 10)
    assert decoder.feed(data) == []
    fed = 0
    while length - fed > 65536:
        assert decoder.feed(b"\x00" * 65536) == []
        fed += 65536
        assert decoder.pending <= modes.FRAME_HEADER_SIZE  # nothing of it held
    events = decoder.feed(b"\x00" * (length - fed) + b"\x02\x00\x00\x00\x01!")
    assert events[0].refusal is not None and says in events[0].refusal
    assert events[1:] == [(0x2, b"!")]


@pytest.mark.parametrize("data", [b"\x20\x00\x00\x00\x00", b"\x0f\x00\x00\x00\x00",
                                  b"\xff\x00\x00\x00\x00", b"\x00\x00\x00\x00\x00"])
def test_types_outside_the_control_range_still_end_the_stream(data):
    events = modes.decoder("framed", 10).feed(b"\x11\x00\x00\x00\x01a" + data)
    assert request_fields(events[0]) == ("subscribe", "a", b"", None, None)
    assert len(events) == 2 and isinstance(events[1], modes.PhpProtocolError)
    assert events[1].code == 1011 and "unknown type" in str(events[1])


def test_php_ending_inside_a_skipped_frame_is_an_error():
    decoder = modes.decoder("framed", 10)
    assert decoder.feed(b"\x13\x00\x01\x00\x00" + b"\x00" * 100) == []
    assert isinstance(decoder.end()[0], modes.PhpProtocolError)
