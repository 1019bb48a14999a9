"""Property-based fuzzing of what PHP writes: the framed and line decoders, alone and end to end.

Random, mutated, truncated, oversized and split inputs must never raise out of
a decoder, must give the same messages however the bytes are cut, and must
reach the client as those messages followed by the right close code, with
one log line for what PHP did wrong and never a traceback. What is right
comes from plain reference parsers written here, never from greenbridge's.
"""

import collections
import re
import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from greenbridge import modes
from support import (LIBRARY_PHP, SENDABLE_CLOSE_CODES, is_utf8, mutated, php_frame, running_bridge,
                     split, wait_until)

MAX_SIZE = 64  # small, so that oversized frames and lines come up often
# A close frame may carry 125 bytes whatever the size limit (RFC 6455 5.5; README: "125 for close").
MAX_CLOSE_PAYLOAD = 125
# Control frames (README): 0x10-0x1f; a channel name takes at most 4 x 255 bytes in UTF-8, a
# publish frame's payload is kind (1 byte), channel length (2 bytes), channel, data.
CONTROL_ACTIONS = {0x11: "subscribe", 0x12: "unsubscribe", 0x13: "publish"}
MAX_CHANNEL_BYTES = 1020
PUBLICATION_KINDS = {0: None, 1: "text", 2: "binary", 3: "json"}
FRAME_HEADER_SIZE = 5  # framed mode: a type byte and a 4-byte length (README)
FUZZ = settings(max_examples=500, deadline=None, derandomize=True)
# End to end, each stream costs a connection and a PHP process: enough streams for every
# ending to reach a client; the decoders' tests above try far more streams.
FUZZ_END_TO_END = settings(max_examples=40, deadline=None, derandomize=True,
                           suppress_health_check=[HealthCheck.too_slow])


# -- inputs ----------------------------------------------------------------------

payloads = st.one_of(st.binary(max_size=MAX_SIZE + 2),
                     st.text(max_size=20).map(lambda text: text.encode("utf-8", "surrogatepass")))
close_payloads = st.one_of(
    st.just(b""), st.binary(max_size=3),
    st.tuples(st.sampled_from(sorted(SENDABLE_CLOSE_CODES)[:20] + [0, 999, 1004, 1005, 1006,
                                                                     1015, 2999, 5000, 65535]),
              st.text(max_size=10) | st.sampled_from(["r" * 123, "r" * 124, "é" * 62])).map(lambda pair: struct.pack("!H", pair[0])
                                        + pair[1].encode("utf-8", "surrogatepass")))
publish_payloads = st.tuples(st.sampled_from([0, 1, 2, 3, 7]), st.binary(max_size=6),
                             st.integers(-2, 2), payloads).map(
    lambda parts: struct.pack("!BH", parts[0], max(0, len(parts[1]) + parts[2]))
    + parts[1] + parts[3])
frames = st.one_of(
    st.tuples(st.sampled_from([modes.TYPE_TEXT, modes.TYPE_BINARY]), payloads),
    st.tuples(st.just(modes.TYPE_CLOSE), close_payloads),
    st.tuples(st.integers(0, 255), st.binary(max_size=8)),
    st.tuples(st.just(0x13), publish_payloads),
).map(lambda pair: php_frame(*pair))
# A frame whose header claims more than is sent: cut short, or oversized.
lengths = st.one_of(st.sampled_from([0, 1, 2, 124, 125, 126, MAX_SIZE - 1, MAX_SIZE, MAX_SIZE + 1,
                                      2 ** 31, 2 ** 32 - 1]),
                    st.integers(0, 2 ** 32 - 1))
lying_headers = st.tuples(st.sampled_from([1, 2, 8]) | st.integers(0, 255), lengths,
                          st.binary(max_size=8)).map(
    lambda parts: struct.pack("!BI", parts[0], parts[1]) + parts[2])

framed_streams = st.one_of(
    st.lists(frames, max_size=6).map(b"".join),
    st.lists(frames, min_size=1, max_size=4).map(b"".join).flatmap(mutated),
    st.tuples(st.lists(frames, max_size=3).map(b"".join), lying_headers).map(b"".join),
    st.binary(max_size=200),
)
line_streams = st.one_of(
    st.lists(st.one_of(payloads, st.binary(min_size=MAX_SIZE - 2, max_size=MAX_SIZE + 2)),
             max_size=6).map(lambda lines: b"\n".join(lines) + b"\n"),
    st.binary(max_size=200),
    st.binary(max_size=200).flatmap(mutated),
)


# -- what a decoder must make of the bytes, written plainly --------------------------

def reference_framed(data, max_size):
    """Messages, then ("close", code, reason) or ("error", 1011), or nothing more."""
    events, offset = [], 0
    while len(data) - offset >= 5:
        frame_type, length = data[offset], int.from_bytes(data[offset + 1:offset + 5], "big")
        control = 0x10 <= frame_type <= 0x1f
        if not control and (frame_type not in (1, 2, 8)
                            or length > (125 if frame_type == 8 else max_size)):
            return events + [("error", 1011)]
        if len(data) - offset - 5 < length:
            return events
        payload = data[offset + 5:offset + 5 + length]
        offset += 5 + length
        if control:
            events.append(_reference_control(frame_type, payload, max_size))
            continue
        if frame_type == 8:
            return events + [_reference_close(payload)]
        if frame_type == 1 and not is_utf8(payload):
            return events + [("error", 1011)]
        events.append((frame_type, payload))
    return events


def _reference_control(frame_type, payload, max_size):
    """("control", action, channel, data, kind), or ("refused", action)."""
    action = CONTROL_ACTIONS.get(frame_type)
    if action is None:
        return "refused", None
    if action != "publish":
        if len(payload) > MAX_CHANNEL_BYTES:
            return "refused", action
        return "control", action, payload.decode("utf-8", "replace"), b"", None
    if len(payload) < 3 or payload[0] not in PUBLICATION_KINDS:
        return "refused", action
    channel_end = 3 + int.from_bytes(payload[1:3], "big")
    if channel_end > len(payload) or len(payload) - channel_end > max_size:
        return "refused", action
    return ("control", action, payload[3:channel_end].decode("utf-8", "replace"),
            payload[channel_end:], PUBLICATION_KINDS[payload[0]])


def _reference_close(payload):
    if not payload:
        return "close", 1005, ""
    code = int.from_bytes(payload[:2], "big")
    if len(payload) < 2 or code not in SENDABLE_CLOSE_CODES or not is_utf8(payload[2:]):
        return "error", 1011
    return "close", code, payload[2:].decode()


def reference_lines(data, max_size):
    """One message per complete line (text when UTF-8), ("error", 1009) at the first long one."""
    *lines, rest = data.split(b"\n")
    events = []
    for line in lines:
        if len(line) > max_size:
            return events + [("error", 1009)]
        events.append((1 if is_utf8(line) else 2, line))
    return events + [("error", 1009)] if len(rest) > max_size else events


def reference_with_end(reference, data, max_size):
    """The reference, then PHP closing its socket: an unfinished frame or line is an error."""
    events = reference(data, max_size)
    if events and events[-1][0] in ("close", "error"):
        return events
    if reference is reference_framed:
        unfinished = _complete_frames_end(data) < len(data)
    else:
        unfinished = not data.endswith(b"\n") and data != b""
    return events + [("error", 1011)] if unfinished else events


def _complete_frames_end(data):
    """Where the last complete frame ends (every frame valid: nothing ended the stream)."""
    offset = 0
    while len(data) - offset >= FRAME_HEADER_SIZE:
        end = offset + FRAME_HEADER_SIZE + int.from_bytes(data[offset + 1:offset + 5], "big")
        if end > len(data):
            break
        offset = end
    return offset


def decode(mode, pieces, then_end=False):
    """Feed the pieces one by one (then PHP's end of stream when `then_end`); the events
    as the pump sees them, up to the first end."""
    decoder = modes.decoder(mode, MAX_SIZE)
    events = []
    for piece in pieces + ([None] if then_end else []):
        for event in decoder.feed(piece) if piece is not None else decoder.end():
            if isinstance(event, modes.PhpProtocolError):
                assert "\n" not in str(event) and str(event).startswith("PHP ")
                return events + [("error", event.code)]
            if isinstance(event, modes.Close):
                return events + [("close", event.code, event.reason)]
            if isinstance(event, modes.ControlRequest):
                event = ("refused", event.action) if event.refusal else \
                    ("control", event.action, event.channel, event.data, event.kind)
            events.append(event)
        # Between reads it holds at most one unfinished frame or line.
        assert decoder.pending < FRAME_HEADER_SIZE + max(3 + MAX_CHANNEL_BYTES + MAX_SIZE,
                                                         MAX_CLOSE_PAYLOAD)
    return events


# -- the decoders on their own ---------------------------------------------------

def assert_decodes_as_the_reference(mode, reference, whole, pieces):
    assert b"".join(pieces) == whole
    expected = reference(whole, MAX_SIZE)
    assert decode(mode, [whole]) == expected
    assert decode(mode, pieces) == expected
    assert decode(mode, pieces, then_end=True) == reference_with_end(reference, whole, MAX_SIZE)


@FUZZ
@given(data=framed_streams.flatmap(lambda data: st.tuples(st.just(data), split(data))))
@example(data=(php_frame(1, b"ok") + php_frame(8, b"\x03\xe8bye") + php_frame(9, b""),
               [b"\x01\x00",
                php_frame(1, b"ok")[2:] + php_frame(8, b"\x03\xe8bye") + php_frame(9, b"")]))
@example(data=(struct.pack("!BI", 2, 2 ** 32 - 1), [b"", struct.pack("!BI", 2, 2 ** 32 - 1)]))
# A close frame longer than MAX_SIZE, held in two reads (hypothesis found it once).
@example(data=(php_frame(8, b"\x03\xe8" + b"r" * 123),
               [php_frame(8, b"\x03\xe8" + b"r" * 123)[:69],
                php_frame(8, b"\x03\xe8" + b"r" * 123)[69:]]))
def test_framed_decoder_matches_the_reference_however_cut(data):
    assert_decodes_as_the_reference(modes.FRAMED, reference_framed, *data)


@FUZZ
@given(data=line_streams.flatmap(lambda data: st.tuples(st.just(data), split(data))))
@example(data=(b"x" * (MAX_SIZE + 1), [b"x" * MAX_SIZE, b"x"]))
def test_line_decoder_matches_the_reference_however_cut(data):
    assert_decodes_as_the_reference(modes.LINE, reference_lines, *data)


@FUZZ
@given(messages=st.lists(st.tuples(st.sampled_from([1, 2]), payloads), max_size=8),
       cut=st.integers(1, 7))
def test_framed_messages_come_out_exactly_as_framed(messages, cut):
    messages = [(kind, payload) for kind, payload in messages
                if len(payload) <= MAX_SIZE and (kind == 2 or is_utf8(payload))]
    data = b"".join(php_frame(kind, payload) for kind, payload in messages)
    pieces = [data[start:start + cut] for start in range(0, len(data), cut)]
    assert decode(modes.FRAMED, pieces) == messages


# -- end to end: PHP writes the bytes, a real client reads what the bridge made of them -----

def bridge_in_mode(mode):
    """A server for the block running library.php in `mode`, checked after it (running_bridge)
    with a text message, which both modes echo as text."""
    def assert_serves(bridge):
        with connect(bridge.url()) as ws:
            ws.send("still serving")
            assert ws.recv(timeout=20) == "still serving"
    return running_bridge("--message-mode", mode, "--max-payload-size", str(MAX_SIZE),
                          "--php-kill-grace", "0.2", script=LIBRARY_PHP,
                          assert_serves=assert_serves)


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
_PROTOCOL_ERROR_LINE = re.compile(r"WARNING greenbridge\.pump: \[[0-9a-f-]{36}\] PHP (sent|wrote|ended) "
                                  r"[^\n]*; closing with 10(09|11)$")


def what_the_client_sees(bridge, pieces):
    cuts = []
    for piece in pieces[:-1]:
        cuts.append((cuts[-1] if cuts else 0) + len(piece))
    url = bridge.url("/?do=write_pieces&hex=%s&cuts=%s"
                     % (b"".join(pieces).hex(), ",".join(map(str, cuts))))
    received = []
    with connect(url, open_timeout=30) as ws:
        try:
            while True:
                message = ws.recv(timeout=30)
                received.append((1, message.encode()) if isinstance(message, str) else (2, message))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return received, (closed.rcvd.code, closed.rcvd.reason)


def expected_by_the_client(events):
    """The messages the client must get, and then its close code and reason (control
    frames are answered to PHP: the client sees nothing of them)."""
    events = [event for event in events if event[0] not in ("control", "refused")]
    if events and events[-1][0] == "close":
        return events[:-1], events[-1][1:]
    if events and events[-1][0] == "error":
        code = events[-1][1]
        return events[:-1], (code, "PHP protocol error" if code == 1011
                             else "message from PHP too big")
    return events, (1000, "PHP closed the connection")


def wait_for_access_lines(bridge, count, timeout=30):
    wait_until(lambda: sum("greenbridge.access:" in line for line in bridge.lines) >= count,
               timeout, "an access line for the connection")


def check_end_to_end(bridge, reference, pieces):
    """The client gets what `reference` makes of the bytes PHP writes and then exits; the
    connection's log lines (up to its access line) are single lines, one per protocol error.
    Returns the client's close code."""
    log_start = len(bridge.lines)
    connections_before = sum("greenbridge.access:" in line for line in bridge.lines)
    events = reference_with_end(reference, b"".join(pieces), MAX_SIZE)  # PHP exits after them
    messages, close = expected_by_the_client(events)
    assert what_the_client_sees(bridge, pieces) == (messages, close)
    wait_for_access_lines(bridge, connections_before + 1)
    new_lines = bridge.lines[log_start:]
    # Everything logged is one line each: no traceback, no continuation lines.
    assert all(_LOG_LINE.match(line) for line in new_lines), "\n".join(new_lines)
    errors = [line for line in new_lines if _PROTOCOL_ERROR_LINE.search(line)]
    assert len(errors) == (1 if events and events[-1][0] == "error" else 0), "\n".join(new_lines)
    return close[0]


def test_framed_garbage_from_php_end_to_end():
    codes = collections.Counter()
    with bridge_in_mode(modes.FRAMED) as bridge:

        @FUZZ_END_TO_END
        @given(data=framed_streams.flatmap(split))
        @example(data=[php_frame(1, b"ok"), php_frame(7, b"")])
        @example(data=[php_frame(1, "é".encode())[:6], php_frame(1, "é".encode())[6:]])
        @example(data=[php_frame(8, b"\x0f\xa0bye")])
        @example(data=[php_frame(8, b"")])
        @example(data=[php_frame(1, b"hi"), php_frame(8, b"\x0b\xb8")])
        @example(data=[php_frame(2, b"cut sh")[:8]])
        # one of each error PHP can make:
        @example(data=[php_frame(1, b"one"), php_frame(1, b"ok\xff")])
        @example(data=[php_frame(8, b"\x03\xed")])
        @example(data=[php_frame(2, b"x" * (MAX_SIZE + 1))])
        def one_stream(data):
            codes[check_end_to_end(bridge, reference_framed, data)] += 1

        one_stream()
    print("close codes the client got: %s" % dict(codes))
    # Each ending came up: a clean end, an error, PHP's own close with another code (the
    # examples give at least one of each; the random streams must add to them).
    assert min(codes[1000], codes[1011], sum(codes.values()) - codes[1000] - codes[1011]) >= 4


def test_line_garbage_from_php_end_to_end():
    codes = collections.Counter()
    with bridge_in_mode(modes.LINE) as bridge:

        @settings(FUZZ_END_TO_END, max_examples=30)
        @given(data=line_streams.flatmap(split))
        @example(data=[b"one\ntw", b"o\n", b"x" * (MAX_SIZE + 1)])
        # Hypothesis draws on the constants of the modules loaded (greenbridge's too), so
        # its choices move when the code grows: each ending is also given by hand.
        @example(data=[b"x" * (MAX_SIZE + 1) + b"\n"])
        @example(data=[b"ok\n", b"\xff" * MAX_SIZE, b"\xfe\n"])
        @example(data=[b"cut"])
        @example(data=[b"fine\n"])
        def one_stream(data):
            codes[check_end_to_end(bridge, reference_lines, data)] += 1

        one_stream()
    print("close codes the client got: %s" % dict(codes))
    assert min(codes[1000], codes[1009], codes[1011]) >= 3
