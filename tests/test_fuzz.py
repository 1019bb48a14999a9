"""Property-based fuzzing of what strangers can send: the HTTP upgrade, frames, the ID line.

Random and mutated inputs must never raise out of the parsers, never pair a
wrong connection ID, and never stop the server from serving. What the server
must answer is decided by plain references written here (RFC 6455 read
directly), never by greenbridge's own code; each fuzz run counts its
outcomes, so a run that never reaches a case cannot pass unnoticed.
"""

import base64
import codecs
import collections
import hashlib
import re
import socket
import struct
import uuid

import gevent
import pytest
from gevent import socket as gsocket
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from greenbridge.backconnect import BackConnectListener
from greenbridge.listening import listen_tcp
from greenbridge.metrics import Metrics
from greenbridge.protocol import ServerProtocol
from greenbridge.upgrade import Rejected, check_upgrade_request
from support import (SENDABLE_CLOSE_CODES, RawClient, frame, is_utf8, mask_payload, mutated,
                     read_until_closed, running_bridge, split, split_response_head,
                     upgrade_request)

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

VALID_REQUEST = upgrade_request("/fuzz?a=1", extra=b"Origin: http://example.test\r\n")

# -- the HTTP upgrade, against a running server -------------------------------------

header_line = st.tuples(
    st.binary(min_size=0, max_size=30).filter(lambda name: b"\r\n" not in name),
    st.binary(min_size=0, max_size=200).filter(lambda value: b"\r\n" not in value),
).map(lambda pair: pair[0] + b": " + pair[1] + b"\r\n")

# Two kinds of draws make sure each outcome the test counts comes often (mutations alone
# left 8 or 9 valid requests of 300 and about 60 cut ones, varying from run to run): the
# valid request with harmless headers added, which must be upgraded, and the valid request
# cut short, which must not be answered.
harmless_header_line = st.tuples(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20),
    st.text("".join(map(chr, range(0x21, 0x7f))), max_size=100),
).map(lambda pair: ("X-Fuzz-%s: %s\r\n" % pair).encode("ascii"))

requests = st.one_of(
    mutated(VALID_REQUEST),
    st.lists(harmless_header_line, max_size=10).map(
        lambda lines: VALID_REQUEST[:-2] + b"".join(lines) + b"\r\n"),
    st.integers(0, len(VALID_REQUEST) - 2).map(lambda end: VALID_REQUEST[:end]),
    st.lists(header_line, max_size=20).map(lambda lines: upgrade_request(extra=b"".join(lines))),
    st.binary(max_size=2000),
)

FUZZ_BRIDGE_FLAGS = ("--handshake-timeout", "2", "--php-kill-grace", "0.2")


def send_request(port, data):
    """Send `data`, end our side, and return everything the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading it all
        return read_until_closed(sock)


ANSWERS = (b"HTTP/1.1 101 ", b"HTTP/1.1 400 ", b"HTTP/1.1 414 ", b"HTTP/1.1 426 ",
           b"HTTP/1.1 431 ", b"HTTP/1.0 400 ", b"HTTP/1.0 426 ")


def sends_a_whole_head(data):
    """Does `data` hold a request line and header lines up to an empty one? (Lines end in
    CRLF, or a bare LF, which RFC 9112 2.2 lets a server accept.) Only a client that
    left before that may go without an answer."""
    _, newline, rest = data.partition(b"\n")
    complete_lines = rest.split(b"\n")[:-1]
    return bool(newline) and any(line in (b"", b"\r") for line in complete_lines)


def accept_value(key):
    """Sec-WebSocket-Accept for a key (RFC 6455 4.2.2: SHA-1 of key + GUID, base64)."""
    digest = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    return base64.b64encode(digest).decode("ascii")


def keys_in(data):
    """The values of the Sec-WebSocket-Key lines in a request head."""
    return [value.strip(b" \t") for name, _, value in
            (line.rstrip(b"\r").partition(b":") for line in data.split(b"\n"))
            if name.lower() == b"sec-websocket-key"]


def test_random_upgrade_requests_get_an_http_answer_once_their_head_is_whole():
    outcomes = collections.Counter()
    with running_bridge(*FUZZ_BRIDGE_FLAGS) as bridge:
        # The RFC 6455 1.3 example key, answered with the RFC's own accept value.
        (status, headers), _ = split_response_head(send_request(bridge.port, VALID_REQUEST))
        assert status.startswith("HTTP/1.1 101 ")
        assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert accept_value(b"dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

        @FUZZ
        @given(data=requests)
        @example(data=b"\r\n\r\n")
        @example(data=b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n")
        @example(data=VALID_REQUEST[:-2])  # the blank line never comes
        def one_request(data):
            answer = send_request(bridge.port, data)
            if sends_a_whole_head(data):
                assert answer.startswith(ANSWERS), (data[:300], answer[:200])
            else:
                assert answer == b"" or answer.startswith(ANSWERS), (data[:300], answer[:200])
            if answer.startswith(b"HTTP/1.1 101 "):
                (_, headers), _ = split_response_head(answer)
                assert headers["sec-websocket-accept"] in map(accept_value, keys_in(data))
            outcomes[answer[:12] or b"closed"] += 1

        one_request()
    print("answers to %d requests: %s" % (sum(outcomes.values()), dict(outcomes)))
    assert outcomes[b"HTTP/1.1 101"] >= 10 and outcomes[b"HTTP/1.1 400"] >= 50
    assert outcomes[b"closed"] >= 10


# -- frames after the upgrade ---------------------------------------------------

# --max-payload-size of the frames fuzz: small, so that messages over it come up often.
MAX_PAYLOAD = 100
RESERVED_OPCODES = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}

keys = st.binary(min_size=4, max_size=4)
utf8_texts = st.text(max_size=30).map(str.encode)
# Not UTF-8: a stray byte, a cut character, a surrogate, an overlong form, past U+10FFFF.
not_utf8 = st.sampled_from([b"\xff", b"\xce\xba\xe1", b"\xed\xa0\x80", b"\xc0\xaf",
                            b"ok\xf4\x90\x80\x80"])
texts = utf8_texts | not_utf8
binaries = st.binary(max_size=40) | st.binary(min_size=MAX_PAYLOAD - 10, max_size=MAX_PAYLOAD + 10)


@st.composite
def fragmented_messages(draw, text_payloads, opcodes=(0x1, 0x2)):
    """A text or binary message cut into frames (text also inside a character), pings between."""
    opcode = draw(st.sampled_from(opcodes))
    payload = draw(text_payloads if opcode == 0x1 else binaries)
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), min_size=1, max_size=4)))
    pieces = [payload[start:end] for start, end in zip([0] + cuts, cuts + [len(payload)])]
    frames = []
    for index, piece in enumerate(pieces):
        if index and draw(st.booleans()):
            frames.append(frame(0x9, draw(st.binary(max_size=10)), key=draw(keys)))
        frames.append(frame(0x0 if index else opcode, piece, fin=index == len(pieces) - 1,
                            key=draw(keys)))
    return b"".join(frames)


def well_formed_frames(text_payloads):
    """Frames a client may send, each message whole (its text payloads from `text_payloads`)."""
    return st.one_of(
        st.builds(frame, opcode=st.just(0x1), payload=text_payloads, key=keys),
        st.builds(frame, opcode=st.just(0x2), payload=binaries, key=keys),
        st.builds(frame, opcode=st.just(0x9), payload=st.binary(max_size=125), key=keys),
        st.builds(frame, opcode=st.just(0xA), payload=st.binary(max_size=20), key=keys),
        fragmented_messages(text_payloads),
    )


close_frames = st.builds(frame, opcode=st.just(0x8), key=keys, payload=st.one_of(
    st.tuples(st.sampled_from([1000, 1001, 1003, 1011, 3000, 4999]), utf8_texts)
    .map(lambda pair: struct.pack("!H", pair[0]) + pair[1]),
    st.sampled_from([b"", b"\x03\xe8", b"\x0b\xb8" + "é".encode() * 61]),
    st.sampled_from([b"\x03", b"\x03\xed", b"\x0f\xa0\xff", b"\x0b\xb8" + "é".encode() * 62]),
    st.tuples(st.sampled_from([0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535]), utf8_texts)
    .map(lambda pair: struct.pack("!H", pair[0]) + pair[1])))
# One of each kind of wrong frame, so that every rule is met often, not by chance.
odd_frames = st.one_of(
    st.builds(frame, opcode=st.sampled_from([0x8, 0x9, 0xA]), payload=st.binary(max_size=10),
              fin=st.just(False), key=keys),                                   # fragmented control
    st.builds(frame, opcode=st.sampled_from([0x8, 0x9, 0xA]),
              payload=st.binary(min_size=126, max_size=130), key=keys),        # control over 125
    st.builds(frame, opcode=st.sampled_from(sorted(RESERVED_OPCODES)),
              payload=st.binary(max_size=10), key=keys),                       # reserved opcode
    st.builds(frame, opcode=st.just(0x0), payload=binaries, fin=st.booleans(),
              key=keys),                                                       # nothing to continue
    st.builds(frame, opcode=st.sampled_from([0x1, 0x2]), payload=texts, mask=st.just(False)),
    st.builds(frame, opcode=st.sampled_from([0x1, 0x2]), payload=texts,
              rsv=st.sampled_from([0x10, 0x20, 0x40]), key=keys),
    st.builds(frame, opcode=st.just(0x1), payload=not_utf8, key=keys),
    fragmented_messages(not_utf8, opcodes=[0x1]),
    st.builds(frame, opcode=st.just(0x2), payload=st.binary(min_size=MAX_PAYLOAD + 1,
                                                           max_size=MAX_PAYLOAD + 10), key=keys),
)
any_frames = st.builds(
    frame,
    opcode=st.integers(0, 15),
    payload=st.binary(max_size=200) | texts,
    fin=st.booleans(),
    mask=st.just(True) | st.booleans(),
    rsv=st.just(0) | st.sampled_from([0x10, 0x20, 0x40]),
    key=keys,
)
frame_streams = st.one_of(
    # Messages in UTF-8 and pings, then the FIN (all echoed and answered first), maybe inside
    # the last frame, or a close frame.
    st.lists(well_formed_frames(utf8_texts), max_size=5).map(b"".join).flatmap(
        lambda data: st.sampled_from([data, data[:-1]]) | close_frames.map(data.__add__)),
    # Messages in UTF-8 and pings, then one odd frame (or a message not in UTF-8), then maybe
    # a close frame.
    st.tuples(st.lists(well_formed_frames(utf8_texts), max_size=4),
              odd_frames.map(lambda odd: [odd]),
              st.lists(close_frames, max_size=1)).map(lambda parts: b"".join(sum(parts, []))),
    # Any frames, mutated; any bytes (one branch with the above: mapped, so not flattened).
    st.one_of(st.lists(well_formed_frames(texts) | any_frames, min_size=1, max_size=4)
              .map(b"".join).flatmap(mutated), st.binary(max_size=300)).map(bytes),
)


def _frame_header(data, offset):
    """(fin, rsv, opcode, mask key or None, length, header size) at `offset`, or None if cut."""
    if len(data) - offset < 2:
        return None
    first, second = data[offset], data[offset + 1]
    length, size = second & 0x7F, 2
    extended = {126: 2, 127: 8}.get(length, 0)
    masked = second & 0x80
    if len(data) - offset < size + extended + (4 if masked else 0):
        return None
    if extended:
        length = int.from_bytes(data[offset + 2:offset + 2 + extended], "big")
        size += extended
    key = data[offset + size:offset + size + 4] if masked else None
    return first & 0x80, first & 0x70, first & 0x0F, key, length, size + (4 if masked else 0)


def _close_answer(payload):
    """The code a server answers a client's close frame with, or fails the connection with."""
    if not payload:
        return 1000  # no status: the server closes normally
    code = int.from_bytes(payload[:2], "big")
    if len(payload) == 1 or code not in SENDABLE_CLOSE_CODES:
        return 1002
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return 1007
    return code


def server_must(data):
    """What RFC 6455 (and --max-payload-size MAX_PAYLOAD, frame headers of a fragmented message
    included, as the README says) ask of the server for these client bytes, then the client's FIN.

    Returns (messages, pings, endings): the data messages in order (their payloads), the ping
    payloads in order (each owed a pong), and the endings allowed: close codes, or None for
    "the stream just ended: the server closes TCP and sends no close frame". A frame that
    breaks two rules may get either code; a frame whose opcode is misplaced may be failed at
    its header or once its payload came.
    """
    messages, pings = [], []
    fragments = size = text = None  # of a fragmented message being received
    offset = 0
    while True:
        header = _frame_header(data, offset)
        if header is None:
            return messages, pings, {None}
        fin, rsv, opcode, key, length, header_size = header
        room = MAX_PAYLOAD - (size or 0)
        at_header = set()
        if rsv or key is None or (opcode >= 8 and (not fin or length > 125)) or length >= 2 ** 63:
            at_header.add(1002)
        if opcode < 8 and length > room:
            at_header.add(1009)
        misplaced = opcode in RESERVED_OPCODES or (opcode == 0 and fragments is None) \
            or (opcode in (1, 2) and fragments is not None)
        after_payload = {1002} if misplaced else set()
        if at_header:
            return messages, pings, at_header | after_payload
        start = offset + header_size
        if len(data) - start < length:
            return messages, pings, after_payload | {None}
        if after_payload:
            return messages, pings, after_payload
        payload = mask_payload(data[start:start + length], key)
        offset = start + length
        if opcode == 0x9:
            pings.append(payload)
        elif opcode == 0x8:
            return messages, pings, {_close_answer(payload)}
        elif opcode in (1, 2) and fin:
            if opcode == 1 and not is_utf8(payload):
                return messages, pings, {1007}
            messages.append(payload)
        elif opcode in (0, 1, 2):
            if fragments is None:  # the first frame of a fragmented message
                fragments, size = [], 0
                text = codecs.getincrementaldecoder("utf-8")() if opcode == 1 else None
            size += header_size + length
            faults = {1009} if size > MAX_PAYLOAD else set()
            if text is not None and not _decodes(text, payload, fin):
                faults.add(1007)  # invalid UTF-8 fails at once, not at the message's end
            if faults:
                return messages, pings, faults
            fragments.append(payload)
            if fin:
                messages.append(b"".join(fragments))
                fragments = size = text = None


def _decodes(decoder, data, final):
    try:
        decoder.decode(data, final)
    except UnicodeDecodeError:
        return False
    return True


def what_the_server_does(port, data, echo):
    """Open a connection, have its PHP echo once (so that it reads what follows), send `data`,
    wait until `echo` came back (if not None), then end our side. Returns (echoed bytes, pong
    payloads, close code or None when the server closed TCP without a close frame); fails on
    anything else, or a frame after the close."""
    client = RawClient(port)
    client.sock.settimeout(30)  # the server must end the connection by itself
    try:
        client.sock.sendall(frame(0x2, b"up"))
        echoed = b""
        while echoed != b"up":
            opcode, payload = client.read_frame()
            assert opcode == 0x2
            echoed += payload
        received = {"echoed": b"", "pongs": [], "close": None}

        def take(opcode, payload):
            assert received["close"] is None, "a frame after the close frame"
            if opcode == 0x2:  # raw mode: PHP's echo, cut as PHP's reads cut it
                received["echoed"] += payload
            elif opcode == 0xA:
                received["pongs"].append(payload)
            else:
                assert opcode == 0x8, opcode
                received["close"] = struct.unpack("!H", payload[:2])[0] if payload else 1005

        try:
            client.sock.sendall(data)
            while echo is not None and len(received["echoed"]) < len(echo):
                take(*client.read_frame())
            client.sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed first; what it sent is still to be read
        while True:
            try:
                take(*client.read_frame())
            except EOFError:
                return received["echoed"], received["pongs"], received["close"]
    finally:
        client.close()


# Streams every run tries first: one of each ending (1007, a close answered, 1009 or 1002 at
# a header, a message with a ping inside, a stream that just ends).
EXAMPLE_STREAMS = [
    frame(0x1, b"\xff") + frame(0x2, b"never read"),
    frame(0x8, b"\x03\xe8bye"),
    struct.pack("!BBQ", 0x82, 0xFF, 2 ** 63) + b"mask",
    frame(0x1, b"x" * 40, fin=False) + frame(0x9, b"p") + frame(0x0, b"y" * 40),
    frame(0x2, b"cut short")[:-1],
]


def with_examples(argument, values):
    """hypothesis's @example for each of `values`, given as `argument`."""
    def decorate(test):
        for value in values:
            test = example(**{argument: value})(test)
        return test
    return decorate


def count_outcome(outcomes, close_code, **happened):
    """Count a stream's ending (a close code or "ended"; a close answered as it came is
    "answered"), and each of `happened` that is true."""
    outcomes[{None: "ended", 1002: 1002, 1007: 1007, 1009: 1009}.get(close_code, "answered")] += 1
    outcomes.update(name for name, true in happened.items() if true)


def what_the_core_does(pieces):
    """Feed the protocol core the client's bytes a piece at a time, taking every event before
    the next piece as the transport does. Returns (data messages, pong payloads, the code of
    the close frame it sends or None); fails on a frame a server may not send or one after
    its close."""
    core = ServerProtocol(MAX_PAYLOAD)
    messages, close_events = [], []
    for piece in pieces:
        core.receive_data(piece)
        while True:
            events = core.events_received()
            if not events:
                break
            for event in events:
                if isinstance(event, tuple):
                    messages.append(event[1])
                else:
                    close_events.append(event)
    sent = b"".join(bytes(data) for data in core.data_to_send())
    pongs, close = [], None
    offset = 0
    while offset < len(sent):
        fin, rsv, opcode, key, length, header_size = _frame_header(sent, offset)
        assert fin and not rsv and key is None, "a server frame is final, plain, unmasked"
        payload = sent[offset + header_size:offset + header_size + length]
        assert len(payload) == length and close is None, "a frame cut or after the close frame"
        if opcode == 0xA:
            pongs.append(payload)
        else:
            assert opcode == 0x8, opcode
            close = int.from_bytes(payload[:2], "big") if payload else 1005
        offset += header_size + length
    assert len(close_events) == (close is not None), close_events  # one close event, if any
    return messages, pongs, close


def test_random_frames_get_what_rfc_6455_asks_of_the_protocol_core():
    """The frame streams of the end-to-end test below, fed to the core alone, however cut."""
    outcomes = collections.Counter()

    @settings(max_examples=500, deadline=None, derandomize=True)
    @given(pieces=frame_streams.flatmap(split))
    @with_examples("pieces", [[stream] for stream in EXAMPLE_STREAMS])
    def one_stream(pieces):
        messages, pings, endings = server_must(b"".join(pieces))
        got_messages, pongs, close_code = what_the_core_does(pieces)
        assert close_code in endings, (pieces, close_code, endings)
        assert pongs == pings
        assert got_messages == messages
        count_outcome(outcomes, close_code, messages=bool(messages), pongs=bool(pongs))

    one_stream()
    print("outcomes of frame streams on the core: %s" % dict(outcomes))
    # Each case came up (derandomized: the same streams every time, for one hypothesis version).
    assert min(outcomes["ended"], outcomes[1002], outcomes["pongs"]) >= 50, outcomes
    assert min(outcomes[1007], outcomes[1009], outcomes["messages"],
               outcomes["answered"]) >= 10, outcomes


def test_random_frames_after_the_upgrade_get_what_rfc_6455_asks():
    outcomes = collections.Counter()
    with running_bridge(*FUZZ_BRIDGE_FLAGS, "--max-payload-size", str(MAX_PAYLOAD)) as bridge:

        @settings(FUZZ, max_examples=40)
        @given(data=frame_streams)
        @with_examples("data", EXAMPLE_STREAMS)
        def one_stream(data):
            messages, pings, endings = server_must(data)
            # A stream that just ends must have all its messages echoed first; one the server
            # ends may lose the echoes PHP had no time to send.
            echo = b"".join(messages) if endings == {None} else None
            echoed, pongs, close_code = what_the_server_does(bridge.port, data, echo)
            assert close_code in endings, (data, close_code, endings)
            assert pongs == pings
            assert b"".join(messages).startswith(echoed)
            count_outcome(outcomes, close_code, echoed=bool(echoed), pongs=bool(pongs))

        one_stream()
    print("outcomes of frame streams: %s" % dict(outcomes))
    # Each ending reached a client through the server (the examples above see to it); the
    # variety of streams is the core's test above, which counts far more of each.
    assert min(outcomes["ended"], outcomes[1002], outcomes["pongs"], outcomes[1007],
               outcomes[1009], outcomes["echoed"], outcomes["answered"]) >= 1, outcomes


# -- the upgrade checks on their own --------------------------------------------

environ_values = st.one_of(st.none(), st.text(max_size=60),
                           st.sampled_from(["websocket", "Upgrade", "13", "GET",
                                            "dGhlIHNhbXBsZSBub25jZQ==", "WebSocket, h2c",
                                            "keep-alive, Upgrade", " 13 ", "8", "get",
                                            "dGhlIHNhbXBsZSBub25jZR==", "dGhlIHNhbXBsZSBub25jZQ",
                                            "AAAAAAAAAAAAAAAAAAAAAAAA"]))
VALID_ENVIRON = {"HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
                 "HTTP_SEC_WEBSOCKET_VERSION": "13",
                 "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==", "REQUEST_METHOD": "GET"}


@st.composite
def environs(draw):
    """Each field mostly valid, else any value or absent: accepted requests and each single
    fault come up often, not only requests wrong in every field."""
    environ = {}
    for name, valid in VALID_ENVIRON.items():
        value = valid if draw(st.integers(0, 4)) else draw(environ_values)
        if value is not None:
            environ[name] = value
    return environ


protocols = st.just("HTTP/1.1") | st.sampled_from(["HTTP/1.0", "HTTP/0.9", "HTTP/2.0", ""])


def is_rfc6455_upgrade(environ, protocol):
    """RFC 6455 4.2.1 read plainly: GET over HTTP/1.1, Upgrade naming websocket and Connection
    naming upgrade (comma-separated, any case), version 13, a key of 16 bytes in base64;
    white space around values does not count."""
    def tokens(name):
        return [token.strip().lower() for token in environ.get(name, "").split(",")]
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    return (environ.get("REQUEST_METHOD") == "GET" and protocol == "HTTP/1.1"
            and "websocket" in tokens("HTTP_UPGRADE") and "upgrade" in tokens("HTTP_CONNECTION")
            and environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() == "13"
            and re.fullmatch(r"[A-Za-z0-9+/]{22}==", key) is not None)


def test_upgrade_checks_accept_exactly_the_well_formed_upgrades():
    outcomes = collections.Counter()

    @settings(max_examples=500, deadline=None, derandomize=True)
    @given(environ=environs(), protocol=protocols)
    @example(environ=VALID_ENVIRON, protocol="HTTP/1.1")
    def one_environ(environ, protocol):
        try:
            check_upgrade_request(dict(environ), protocol)
        except Rejected as rejection:
            assert not is_rfc6455_upgrade(environ, protocol), environ
            assert rejection.status[:3] in ("400", "426")
            # RFC 6455 4.4: a version the server does not speak gets 426 and the one it does.
            if is_rfc6455_upgrade({**environ, "HTTP_SEC_WEBSOCKET_VERSION": "13"}, protocol):
                assert rejection.status[:3] == "426"
                assert ("Sec-WebSocket-Version", "13") in rejection.headers
            outcomes[rejection.status[:3]] += 1
            return
        assert is_rfc6455_upgrade(environ, protocol), (environ, protocol)
        outcomes["accepted"] += 1

    one_environ()
    print("upgrade checks: %s" % dict(outcomes))
    assert min(outcomes["accepted"], outcomes["400"], outcomes["426"]) >= 20


# -- the back-connection ID line, against a listener in this process ---------------------

@pytest.fixture(scope="module")
def listener():
    backconnect = BackConnectListener(listen_tcp("127.0.0.1", 0), 65536, 64, Metrics())
    backconnect.start()
    yield backconnect
    backconnect.close()


def offer(listener, data):
    """Connect to the listener as PHP would, send `data` ({ID} replaced by a fresh registered
    ID), end our side. Returns (the ID, None when refused, else every byte the paired socket
    passes on after the ID line)."""
    expected_id = str(uuid.uuid4())
    pending = listener.expect(expected_id)
    sock = gsocket.create_connection(listener.address, timeout=10)
    try:
        sock.sendall(data.replace(b"{ID}", expected_id.encode()))
        sock.shutdown(socket.SHUT_WR)
        # The listener either pairs the socket or closes it (EOF here).
        closed = gevent.spawn(sock.recv, 1)
        gevent.wait([pending, closed], count=1, timeout=10)
        closed.kill()
        assert pending.ready() or closed.ready(), "neither paired nor refused in 10s"
        if not pending.ready():
            return expected_id, None
        paired = pending.value
        with paired.socket:
            paired.socket.settimeout(10)
            return expected_id, paired.early_data + read_until_closed(paired.socket)
    finally:
        sock.close()
        listener.forget(expected_id)


def names_the_id(data, expected_id):
    """Is the first line of `data` (at most 128 bytes, as the README says) the ID, in a form
    Python's uuid module reads, with ASCII white space around it allowed?"""
    line, newline, _ = data.partition(b"\n")
    if not newline or len(line) > 128:
        return False
    try:
        return uuid.UUID(line.strip().decode("ascii")) == uuid.UUID(expected_id)
    except (ValueError, UnicodeDecodeError):
        return False


id_lines = st.one_of(
    st.binary(max_size=300),
    mutated(b"{ID}\n"),
    st.tuples(st.sampled_from([b"", b" ", b"\t", b"x", b"{", b"urn:uuid:", b" " * 100]),
              st.sampled_from([b"", b" ", b"\r", b"}", b"0", b" " * 100])).map(
        lambda pair: pair[0] + b"{ID}" + pair[1] + b"\n"),
    st.tuples(st.binary(max_size=10), st.binary(max_size=10)).map(
        lambda pair: pair[0] + b"{ID}" + pair[1] + b"\n"),
    st.text(alphabet="0123456789abcdef-", min_size=30, max_size=40).map(
        lambda text: text.encode() + b"\n"),
).flatmap(lambda line: st.tuples(st.just(line), st.binary(max_size=20)).map(b"".join))


def test_id_line_pairs_exactly_when_it_names_its_own_id(listener):
    outcomes = collections.Counter()

    @settings(max_examples=500, deadline=None, derandomize=True)
    @given(data=id_lines)
    @example(data=b"{ID}\nearly bytes")
    @example(data=b"{ID}" + b" " * 93 + b"\n")  # 129 bytes: one too many
    @example(data=b"{ID}" + b" " * 92 + b"\n")
    def one_line(data):
        expected_id, passed_on = offer(listener, data)
        whole = data.replace(b"{ID}", expected_id.encode())
        assert (passed_on is not None) == names_the_id(whole, expected_id), whole
        if passed_on is not None:
            assert passed_on == whole.partition(b"\n")[2]  # PHP's first bytes, all of them
        outcomes["paired" if passed_on is not None else "refused"] += 1

    one_line()
    print("ID lines: %s" % dict(outcomes))
    assert min(outcomes["paired"], outcomes["refused"]) >= 25
