"""The I/O-free protocol core (protocol.py), fed hand-written bytes: no server, no sockets.

Client frames come from support.frame (the tests' own encoder, checked against
RFC 6455's bytes in test_frames.py and below); what the server must send is
written out byte for byte.
"""

import random
import struct
import subprocess
import sys

import pytest
from geventwebsocket.websocket import Header

from greenbridge.frames import CloseCode
from greenbridge.protocol import (COPY_LIMIT, MAX_FRAGMENTS, RECEIVE_SIZE, CloseReceived,
                                  InvalidState, ProtocolFailure, ServerProtocol)
from support import frame

MIB = 1024 * 1024
KEY = bytes([0x37, 0xfa, 0x21, 0x3d])  # the RFC's masking key
# RFC 6455 section 5.7.
RFC_MASKED_HELLO = bytes([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58])
RFC_UNMASKED_HELLO = bytes([0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
RFC_MASKED_PONG_HELLO = bytes([0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58])
RFC_UNMASKED_PING_HELLO = bytes([0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
CLOSE_1000 = b"\x88\x02\x03\xe8"  # the server's reply to a client's close frame 1000


def feed(*chunks, max_payload_size=16 * MIB):
    """A fresh core fed `chunks` one receive each; returns (core, events, bytes it sends)."""
    core = ServerProtocol(max_payload_size)
    events = []
    for chunk in chunks:
        core.receive_data(chunk)
        events += drain(core)
    return core, events, sent(core)


def drain(core):
    """Every event the bytes received so far complete (the core gives one per call)."""
    events = []
    while True:
        more = core.events_received()
        if not more:
            return events
        assert len(more) == 1
        events += more


def sent(core):
    return b"".join(bytes(data) for data in core.data_to_send())


def close_frame(code, reason=b""):
    """A server close frame, by hand: unmasked, one-byte length."""
    return bytes([0x88, 2 + len(reason)]) + struct.pack("!H", code) + reason


def assert_failed(events, data, code, reason):
    """The core refused with `code`: a ProtocolFailure event last, its close frame sent."""
    assert events[-1] == ProtocolFailure(code, reason)
    assert data.endswith(close_frame(code, reason.encode()))


# -- RFC 6455 section 5.7's examples ---------------------------------------------

def test_the_rfc_masked_hello_is_one_text_message():
    _, events, data = feed(RFC_MASKED_HELLO)
    assert events == [(0x1, b"Hello")]
    assert data == b""


def test_the_rfc_unmasked_hello_is_refused_from_a_client():
    _, events, data = feed(RFC_UNMASKED_HELLO)
    assert_failed(events, data, 1002, "client frame not masked")


def test_the_rfc_fragmented_hello_is_joined():
    # "Hel" and "lo" as in the RFC, masked as a client must.
    _, events, _ = feed(frame(0x1, b"Hel", fin=False, key=KEY) + frame(0x0, b"lo", key=KEY))
    assert events == [(0x1, b"Hello")]


def test_the_rfc_masked_pong_is_taken_silently():
    _, events, data = feed(RFC_MASKED_PONG_HELLO + RFC_MASKED_HELLO)
    assert events == [(0x1, b"Hello")]
    assert data == b""


def test_a_ping_is_answered_with_its_payload():
    _, events, data = feed(frame(0x9, b"Hello", key=KEY))
    assert events == []
    assert data == bytes([0x8a, 0x05]) + b"Hello"  # the RFC's unmasked pong


def test_the_server_sends_the_rfc_unmasked_frames():
    core = ServerProtocol(MIB)
    core.send_text(b"Hello")
    core.send_ping(b"Hello")
    assert sent(core) == RFC_UNMASKED_HELLO + RFC_UNMASKED_PING_HELLO
    # "256 bytes binary message in a single unmasked frame", "64KiB binary message".
    core.send_binary(b"\x00" * 256)
    assert sent(core) == b"\x82\x7e\x01\x00" + b"\x00" * 256
    core.send_binary(b"\x00" * 65536)
    assert sent(core) == b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00" + b"\x00" * 65536


# -- length encodings, masking, how the bytes arrive --------------------------------

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]


@pytest.mark.parametrize("length", LENGTHS)
def test_every_length_encoding_is_received(length):
    payload = random.Random(length).randbytes(length)
    encoded = frame(0x2, payload)
    # 7-bit, 16-bit and 64-bit lengths: the header is 6, 8 or 14 bytes.
    assert len(encoded) - length == (6 if length < 126 else 8 if length < 65536 else 14)
    _, events, _ = feed(encoded)
    assert events == [(0x2, payload)]


@pytest.mark.parametrize("length", LENGTHS)
def test_every_length_encoding_is_sent(length):
    core = ServerProtocol(MIB)
    core.send_binary(b"p" * length)
    if length < 126:
        header = bytes([0x82, length])
    elif length < 65536:
        header = bytes([0x82, 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x82, 127]) + length.to_bytes(8, "big")
    assert sent(core) == header + b"p" * length


def test_every_mask_key_unmasks():
    rng = random.Random(5)
    for _ in range(200):
        payload, key = rng.randbytes(rng.randrange(40)), rng.randbytes(4)
        _, events, _ = feed(frame(0x2, payload, key=key))
        assert events == [(0x2, payload)]


def test_frames_cut_at_every_byte_are_read_whole():
    stream = (frame(0x1, b"first", fin=False) + frame(0x9, b"ping") + frame(0x0, b" message")
              + frame(0x2, b"x" * 300) + frame(0x1, "caf\u00e9".encode()))
    expected = [(0x1, b"first message"), (0x2, b"x" * 300), (0x1, "caf\u00e9".encode())]
    for cut in range(1, len(stream)):
        _, events, data = feed(stream[:cut], stream[cut:])
        assert events == expected, cut
        assert data == b"\x8a\x04ping"
    _, events, _ = feed(*[stream[index:index + 1] for index in range(len(stream))])
    assert events == expected


def test_many_frames_in_one_receive_are_all_delivered_in_order():
    messages = [(0x1 + index % 2, b"message %d" % index) for index in range(50)]
    _, events, _ = feed(b"".join(frame(opcode, payload) for opcode, payload in messages))
    assert events == messages


def test_a_large_payload_is_received_in_place():
    """What the transport does: receive into receive_buffer(), so no copy is made."""
    payload = random.Random(1).randbytes(3 * MIB)
    encoded = frame(0x2, payload)
    core = ServerProtocol(16 * MIB)
    core.receive_data(encoded[:1000])
    assert core.events_received() == ()
    position = 1000
    while position < len(encoded):
        target = core.receive_buffer()
        assert type(target.obj).__name__ == "mmap"  # pages taken as the payload arrives
        count = min(len(target), 100_000)
        target[:count] = encoded[position:position + count]
        core.received_into(count)
        position += count
    assert core.receive_buffer() is None
    assert core.events_received() == [(0x2, payload)]
    # The next large payload is received into the same mapping (no page faults).
    core.receive_data(frame(0x2, payload)[:1000])
    assert core.events_received() == ()
    assert core.receive_buffer().obj is target.obj


def test_a_payload_just_over_a_receive_gets_a_plain_buffer():
    core = ServerProtocol(MIB)
    core.receive_data(frame(0x2, b"m" * (RECEIVE_SIZE // 2))[:10])
    assert core.events_received() == ()
    assert type(core.receive_buffer().obj) is bytearray


def test_a_large_payload_fed_as_bytes_is_read_too():
    payload = random.Random(2).randbytes(RECEIVE_SIZE * 3 + 5)
    encoded = frame(0x2, payload) + frame(0x1, b"next")
    chunks = [encoded[index:index + 10_000] for index in range(0, len(encoded), 10_000)]
    _, events, _ = feed(*chunks)
    assert events == [(0x2, payload), (0x1, b"next")]


def test_large_frames_are_sent_without_a_copy():
    core = ServerProtocol(MIB)
    payload = b"l" * (COPY_LIMIT + 1)
    core.send_binary(payload)
    header, body = core.data_to_send()
    assert header == b"\x82\x7f" + (COPY_LIMIT + 1).to_bytes(8, "big")
    assert body is payload


# -- headers as gevent-websocket encodes them (its per-byte reference code) ------------

REFERENCE_LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 2**32 + 5, 2**63 - 1]


def reference_frame(opcode, payload, fin=True):
    """A frame by gevent-websocket's Header: its header, and the payload masked by its loop."""
    header = Header(fin=fin, opcode=opcode, length=len(payload))
    header.mask = KEY
    return bytes(Header.encode_header(fin, opcode, KEY, len(payload), 0)) \
        + bytes(header.mask_payload(payload))


@pytest.mark.parametrize("length", [length for length in REFERENCE_LENGTHS if length <= 65536])
def test_frames_from_gevent_websocket_are_read_anywhere_in_a_receive(length):
    payload = random.Random(length).randbytes(length)
    # A whole frame, then a message in two frames, between other frames.
    stream = (frame(0x9, b"before") + reference_frame(0x2, payload)
              + reference_frame(0x2, payload[:length // 2], fin=False)
              + reference_frame(0x0, payload[length // 2:]) + frame(0xA, b"after"))
    _, events, data = feed(stream)
    assert events == [(0x2, payload), (0x2, payload)]
    assert data == b"\x8a\x06before"


@pytest.mark.parametrize("length", REFERENCE_LENGTHS)
def test_a_header_is_acted_on_only_once_it_is_whole(length):
    encoded = bytes(Header.encode_header(True, 0x2, KEY, length, 0))
    core = ServerProtocol(MIB)
    for byte in range(len(encoded) - 1):
        core.receive_data(encoded[byte:byte + 1])
        assert core.events_received() == ()
        assert core.receive_buffer() is None
    core.receive_data(encoded[-1:])
    events = drain(core)
    if length > MIB:  # refused at the header, before any payload is read
        assert_failed(events, sent(core), 1009, "message over %d bytes" % MIB)
    elif length:
        assert len(core.receive_buffer()) == length  # waiting for exactly its payload
    else:
        assert events == [(0x2, b"")]


# -- every RFC 6455 violation, and the close code it gets -----------------------------

@pytest.mark.parametrize("bad,code,reason", [
    (frame(0x3, b"x"), 1002, "reserved opcode 0x3"),
    (frame(0x7, b"x"), 1002, "reserved opcode 0x7"),
    (frame(0xB, b"x"), 1002, "reserved opcode 0xb"),
    (frame(0xF, b"x"), 1002, "reserved opcode 0xf"),
    (frame(0x1, b"x", rsv=0x40), 1002, "reserved bits set without an extension"),
    (frame(0x1, b"x", rsv=0x20), 1002, "reserved bits set without an extension"),
    (frame(0x2, b"x", rsv=0x10), 1002, "reserved bits set without an extension"),
    (frame(0x9, b"x", rsv=0x40), 1002, "reserved bits set without an extension"),
    (frame(0x2, b"x", mask=False), 1002, "client frame not masked"),
    (frame(0x8, b"", mask=False), 1002, "client frame not masked"),
    (frame(0x0, b"x"), 1002, "continuation frame without a message"),
    (frame(0x1, b"a", fin=False) + frame(0x2, b"b"), 1002,
     "new message started inside a fragmented one"),
    (frame(0x1, b"a", fin=False) + frame(0x1, b"b", fin=False), 1002,
     "new message started inside a fragmented one"),
    (frame(0x9, b"x", fin=False), 1002, "fragmented control frame"),
    (frame(0x8, b"", fin=False), 1002, "fragmented control frame"),
    (frame(0xA, b"x" * 126), 1002, "control frame of 126 bytes (125 at most)"),
    (frame(0x8, b"\x03\xe8" + b"r" * 124), 1002, "control frame of 126 bytes (125 at most)"),
    (frame(0x8, b"\x03"), 1002, "close frame with a 1-byte payload"),
    (frame(0x1, b"\xff\xfe"), 1007, "invalid UTF-8 in text message"),
    (frame(0x1, b"\xed\xa0\x80"), 1007, "invalid UTF-8 in text message"),       # a surrogate
    (frame(0x1, b"\xc0\xaf"), 1007, "invalid UTF-8 in text message"),           # overlong
    (frame(0x1, b"\xf4\x90\x80\x80"), 1007, "invalid UTF-8 in text message"),   # past U+10FFFF
    (frame(0x1, b"ok\xc3"), 1007, "invalid UTF-8 in text message"),             # cut short
    (frame(0x1, b"ok", fin=False) + frame(0x0, b"\xed\xa0\x80"), 1007,
     "invalid UTF-8 in text message"),                                       # in the last fragment
    (frame(0x8, b"\x03\xe8\xff"), 1007, "invalid UTF-8 in text message"),       # close reason
], ids=lambda value: value if isinstance(value, str) else None)
def test_violations_close_with_their_code(bad, code, reason):
    core, events, data = feed(bad + frame(0x1, b"after"))
    assert_failed(events, data, code, reason)
    assert [event for event in events if type(event) is tuple] == []
    assert core.close_sent.code == code


@pytest.mark.parametrize("header,reason", [
    (b"\x09\x80" + KEY, "fragmented control frame"),
    (b"\x89\xfe\x00\x7e" + KEY, "control frame of 126 bytes (125 at most)"),
    (b"\x89\xff" + (2 ** 63 - 1).to_bytes(8, "big") + KEY,
     "control frame of 9223372036854775807 bytes (125 at most)"),
    (b"\x82\x7f" + (2 ** 63 - 1).to_bytes(8, "big"), "client frame not masked"),
])
def test_bad_headers_are_refused_before_their_payload_comes(header, reason):
    _, events, data = feed(header)
    assert_failed(events, data, 1002, reason)


@pytest.mark.parametrize("code", [0, 5, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_invalid_close_codes_are_protocol_errors(code):
    _, events, data = feed(frame(0x8, struct.pack("!H", code)))
    assert_failed(events, data, 1002, "invalid close code %d" % code)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 4999])
def test_valid_close_codes_are_echoed_without_the_reason(code):
    core, events, data = feed(frame(0x8, struct.pack("!H", code) + b"bye"))
    assert events == [CloseReceived(code, "bye")]
    assert data == close_frame(code)
    assert core.close_received == CloseReceived(code, "bye")


# -- limits -----------------------------------------------------------------------

def test_a_frame_over_the_limit_is_refused_at_its_header():
    _, events, data = feed(b"\x82\xfe\x04\x01" + KEY, max_payload_size=1024)  # 1025 announced
    assert_failed(events, data, 1009, "message over 1024 bytes")
    _, events, _ = feed(frame(0x2, b"x" * 1024), max_payload_size=1024)
    assert events == [(0x2, b"x" * 1024)]


def test_a_header_announcing_2_63_bytes_takes_nothing():
    _, events, data = feed(b"\x82\xff" + (2 ** 63 - 1).to_bytes(8, "big") + KEY)
    assert_failed(events, data, 1009, "message over %d bytes" % (16 * MIB))


def test_fragments_count_their_headers_against_the_limit():
    # 200 payload bytes and 2 * 6 header bytes: 212; the payloads alone would fit in 211.
    message = frame(0x2, b"x" * 100, fin=False) + frame(0x0, b"x" * 100)
    _, events, data = feed(message, max_payload_size=211)
    assert_failed(events, data, 1009, "message over 211 bytes (frame headers included)")
    _, events, _ = feed(message, max_payload_size=212)
    assert events == [(0x2, b"x" * 200)]


def test_the_room_left_in_a_fragmented_message_is_checked_at_each_header():
    start = frame(0x2, b"x" * 900, fin=False)  # 906 bytes used: 118 left of 1024
    _, events, data = feed(start + b"\x80\xfe\x00\x7e" + KEY, max_payload_size=1024)
    assert_failed(events, data, 1009, "message over 1024 bytes")


def test_empty_fragments_are_not_free():
    flood = frame(0x2, b"", fin=False) + frame(0x0, b"", fin=False) * 200
    _, events, data = feed(flood, max_payload_size=1024)
    assert_failed(events, data, 1009, "message over 1024 bytes (frame headers included)")


def test_a_message_has_at_most_max_fragments_frames():
    fragment = frame(0x0, b"x", fin=False)
    start = frame(0x2, b"x", fin=False)
    _, events, _ = feed(start + fragment * (MAX_FRAGMENTS - 2) + frame(0x0, b"x"))
    assert events == [(0x2, b"x" * MAX_FRAGMENTS)]
    _, events, data = feed(start + fragment * (MAX_FRAGMENTS - 1) + frame(0x0, b"x"))
    assert_failed(events, data, 1009, "message in more than %d frames" % MAX_FRAGMENTS)


def test_control_frames_inside_a_full_message_are_not_counted():
    # 106 bytes with its header, and 6 for the empty last frame: 112, the limit.
    message = frame(0x2, b"x" * 100, fin=False)
    _, events, data = feed(message + frame(0x9, b"p" * 125) + frame(0x0, b""),
                           max_payload_size=112)
    assert events == [(0x2, b"x" * 100)]
    assert data == b"\x8a\x7d" + b"p" * 125


def test_utf8_is_checked_as_fragments_arrive():
    # A character cut between two fragments is fine...
    euro = "\u20ac".encode()
    _, events, _ = feed(frame(0x1, euro[:1], fin=False) + frame(0x0, euro[1:2], fin=False)
                        + frame(0x0, euro[2:]))
    assert events == [(0x1, euro)]
    # ...invalid text fails with its fragment, not at the message's end.
    _, events, data = feed(frame(0x1, b"ok", fin=False) + frame(0x0, b"\xed\xa0\x80", fin=False))
    assert_failed(events, data, 1007, "invalid UTF-8 in text message")
    # and a message cut inside a character fails at its last frame.
    _, events, data = feed(frame(0x1, euro[:2], fin=False) + frame(0x0, b""))
    assert_failed(events, data, 1007, "invalid UTF-8 in text message")


def test_binary_messages_are_not_checked_as_text():
    _, events, _ = feed(frame(0x2, b"\xff", fin=False) + frame(0x0, b"\xfe"))
    assert events == [(0x2, b"\xff\xfe")]


def test_message_in_progress_from_the_first_fragment_to_the_last():
    core = ServerProtocol(MIB)
    core.receive_data(frame(0x2, b"whole"))
    assert drain(core) == [(0x2, b"whole")]
    assert not core.message_in_progress
    core.receive_data(frame(0x2, b"a", fin=False))
    assert drain(core) == []
    assert core.message_in_progress
    core.receive_data(frame(0x9, b"") + frame(0x0, b"b", fin=False))
    assert drain(core) == []
    assert core.message_in_progress
    core.receive_data(frame(0x0, b"c"))
    assert drain(core) == [(0x2, b"abc")]
    assert not core.message_in_progress


def test_bytes_after_a_message_are_parsed_only_when_the_next_event_is_asked_for():
    """A ping or a close behind a message is acted on once the transport took the message."""
    core = ServerProtocol(MIB)
    core.receive_data(frame(0x1, b"first") + frame(0x9, b"p") + frame(0x8, b"\x03\xe8")
                      + frame(0x2, b"ignored"))
    assert core.events_received() == [(0x1, b"first")]
    assert sent(core) == b""  # no pong yet, no close reply
    assert core.close_received is None
    assert core.events_received() == [CloseReceived(1000, "")]
    assert sent(core) == b"\x8a\x01p" + CLOSE_1000
    assert core.events_received() == ()


def test_the_transport_fails_a_slow_message_with_1008():
    core = ServerProtocol(MIB)
    core.receive_data(frame(0x2, b"a", fin=False))
    assert core.events_received() == ()
    core.fail(CloseCode.POLICY_VIOLATION, "message not complete within 60s")
    core.receive_data(frame(0x0, b"b"))
    assert_failed(core.events_received(), sent(core), 1008, "message not complete within 60s")
    assert not core.message_in_progress


# -- the close handshake ------------------------------------------------------------

def test_an_empty_close_is_1005_and_answered_with_1000():
    core, events, data = feed(frame(0x8, b"") + frame(0x1, b"ignored"))
    assert events == [CloseReceived(1005, "")]
    assert data == CLOSE_1000


def test_a_close_inside_a_fragmented_message_drops_the_message():
    _, events, data = feed(frame(0x1, b"half", fin=False) + frame(0x8, b"\x03\xe9"))
    assert events == [CloseReceived(1001, "")]
    assert data == close_frame(1001)


def test_the_server_closes_first_and_reads_until_the_clients_close():
    core = ServerProtocol(MIB)
    core.send_close(CloseCode.GOING_AWAY, "restart")
    assert sent(core) == close_frame(1001, b"restart")
    core.send_close(CloseCode.NORMAL)  # a second close sends nothing
    assert sent(core) == b""
    with pytest.raises(InvalidState):
        core.send_text(b"late")
    # Messages the client sent before it saw our close still arrive; its close is not answered.
    core.receive_data(frame(0x1, b"in flight") + frame(0x9, b"ping") + frame(0x8, b"\x03\xe9"))
    assert drain(core) == [(0x1, b"in flight"), CloseReceived(1001, "")]
    assert sent(core) == b""


def test_a_close_reason_is_cut_to_123_bytes_on_a_character_boundary():
    core = ServerProtocol(MIB)
    core.send_close(CloseCode.NORMAL, "\u00e9" * 100)  # 200 bytes of UTF-8
    data = sent(core)
    assert data == b"\x88\x7c\x03\xe8" + "\u00e9".encode() * 61  # 2 + 122 bytes
    assert len(data) - 2 <= 125


def test_a_1005_close_is_sent_empty():
    core = ServerProtocol(MIB)
    core.send_close(CloseCode.NO_STATUS)
    assert sent(core) == b"\x88\x00"


def test_nothing_counts_after_a_failure():
    core, events, data = feed(frame(0x3, b""), frame(0x1, b"later"), frame(0x9, b"p"))
    assert events == [ProtocolFailure(1002, "reserved opcode 0x3")]
    assert data == close_frame(1002, b"reserved opcode 0x3")
    assert core.receive_buffer() is None


def test_a_large_payload_cut_by_a_close_is_dropped():
    core = ServerProtocol(16 * MIB)
    core.receive_data(frame(0x2, b"x" * (2 * RECEIVE_SIZE))[:100])
    assert core.events_received() == ()
    assert core.receive_buffer() is not None
    core.fail(CloseCode.GOING_AWAY, "shutting down")
    assert core.receive_buffer() is None
    assert core.events_received() == [ProtocolFailure(1001, "shutting down")]


# -- random streams: what went in comes out ------------------------------------------

def test_random_fragmented_streams_give_back_their_messages():
    rng = random.Random(6455)
    for _ in range(200):
        messages, stream, pings = [], b"", []
        for _ in range(rng.randrange(1, 8)):
            opcode = rng.choice([0x1, 0x2])
            payload = ("\u00e9\u20ac\U0001f600x" * 50)[:rng.randrange(60)].encode() \
                if opcode == 0x1 else rng.randbytes(rng.randrange(200))
            messages.append((opcode, payload))
            cuts = sorted(rng.sample(range(len(payload) + 1),
                                     min(len(payload) + 1, rng.randrange(0, 4))))
            pieces = [payload[a:b] for a, b in zip([0] + cuts, cuts + [len(payload)])]
            for index, piece in enumerate(pieces):
                stream += frame(opcode if index == 0 else 0x0, piece, fin=index == len(pieces) - 1)
                if rng.random() < 0.3:
                    pings.append(rng.randbytes(rng.randrange(126)))
                    stream += frame(0x9, pings[-1])
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(6))))
        chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
        _, events, data = feed(*chunks)
        assert events == messages
        assert data == b"".join(bytes([0x8a, len(ping)]) + ping for ping in pings)


def test_the_core_imports_no_gevent():
    """No I/O in the core: importing it loads neither gevent nor gevent-websocket."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, greenbridge.protocol; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in "
         "('gevent', 'geventwebsocket', 'greenlet', 'ssl')))"],
        capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
