"""Message modes: how WebSocket messages become bytes on PHP's socket, and back.

Pure protocol code, no I/O: encoders return bytes to write, decoders are fed
what PHP wrote and return the messages it completes (and ``end()`` says what
PHP closing its socket means). That keeps the framed parser testable (and
fuzzable) on its own.

- ``raw``: payloads as a byte stream; each read from PHP becomes a binary message.
- ``line``: each client message plus ``\\n``; each line PHP writes becomes a
  message, text when it is valid UTF-8, else binary.
- ``framed``: ``type`` (1 byte) ``length`` (4 bytes, big-endian) ``payload``,
  both ways. Types: 0x01 text, 0x02 binary, 0x08 close (empty, or a 2-byte
  close code and a UTF-8 reason); control frames, 0x10 to 0x1f: PHP asks
  (0x11 subscribe, 0x12 unsubscribe, 0x13 publish) and the bridge answers each
  with one reply (0x10). Only a script using them gets replies, so a library
  that never sends them sees the protocol it always saw. A subscribe may carry
  the position to recover from after the channel name (a NUL byte, the offset
  in 8 bytes, the epoch); its reply then carries the outcome as JSON.

A control frame PHP gets wrong is refused in its reply (its length says where
the next frame starts, so the stream stays whole); an unknown type outside
the control range means the stream cannot be trusted and ends the client
(1011), as before.
"""

import struct

from greenbridge.channel_names import MAX_CHANNEL_LENGTH
from greenbridge.frames import OPCODE_BINARY, OPCODE_TEXT, CloseCode, valid_close_code
from greenbridge.settings.values import FRAMED, LINE

# Frame types of the framed mode; text and binary are the WebSocket opcodes.
TYPE_TEXT = OPCODE_TEXT
TYPE_BINARY = OPCODE_BINARY
TYPE_CLOSE = 0x8
_DATA_TYPES = frozenset((TYPE_TEXT, TYPE_BINARY))
# Control frames (see ControlRequest): their replies, and what PHP may ask.
TYPE_REPLY = 0x10
TYPE_SUBSCRIBE = 0x11
TYPE_UNSUBSCRIBE = 0x12
TYPE_PUBLISH = 0x13
_CONTROL_RANGE = range(0x10, 0x20)  # an unknown type here is refused, not fatal: room to grow
SUBSCRIBE, UNSUBSCRIBE, PUBLISH = "subscribe", "unsubscribe", "publish"
_ACTIONS = {TYPE_SUBSCRIBE: SUBSCRIBE, TYPE_UNSUBSCRIBE: UNSUBSCRIBE, TYPE_PUBLISH: PUBLISH}
# A publish frame's payload: kind (1 byte), channel length (2 bytes), channel, data.
_PUBLISH_HEAD = struct.Struct("!BH")
# The kind byte: 0 lets the bridge choose (text when UTF-8, else binary).
# (The kinds of channels/publication.py, by name: this layer does not import channels.)
PUBLICATION_KINDS = {0: None, TYPE_TEXT: "text", TYPE_BINARY: "binary", 0x03: "json"}
# A reply's payload: a status byte, then (refused) a one-line UTF-8 reason or (a subscribe
# with a position) the recovery's outcome as JSON.
REPLY_OK, REPLY_REFUSED = 0x00, 0x01
# A subscribe frame's position, after the channel name: NUL, offset (8 bytes), epoch (ASCII).
_POSITION_MARK = b"\x00"
_OFFSET = struct.Struct("!Q")
MAX_EPOCH_BYTES = 64
_MAX_POSITION_BYTES = len(_POSITION_MARK) + _OFFSET.size + MAX_EPOCH_BYTES
# The most bytes a channel name can take in UTF-8; longer is skipped unread and refused.
_MAX_CHANNEL_BYTES = 4 * MAX_CHANNEL_LENGTH
# The header of a control frame whose payload is dropped as it comes (see FramedDecoder).
_SKIPPED = -1

_FRAME_HEADER = struct.Struct("!BI")
FRAME_HEADER_SIZE = _FRAME_HEADER.size
# The client's close code when PHP breaks its message mode (1011).
PHP_ERROR = CloseCode.INTERNAL_ERROR


class Close:
    """PHP asked to close the WebSocket with this code (1005: none given) and reason."""

    __slots__ = ("code", "reason")

    def __init__(self, code, reason=""):
        self.code = code
        self.reason = reason

    def __repr__(self):
        return "Close(%d, %r)" % (self.code, self.reason)


class PhpProtocolError(Exception):
    """PHP wrote something its message mode does not allow; close the client with ``code``.

    The message (for the log) says what PHP did wrong; the client gets a
    short reason that does not reveal the script's internals.
    """

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.client_reason = "message from PHP too big" if code == CloseCode.TOO_BIG \
            else "PHP protocol error"


class ControlRequest:
    """A control frame from PHP: `action` on `channel` (undecided: names are the hub's to check).

    A publish carries its `data` (bytes) and `kind` (None: the bridge chooses); a
    subscribe may carry a `position` to recover from, (offset, epoch).
    A frame that cannot be carried out as sent has its reason in `refusal`.
    """

    __slots__ = ("action", "channel", "data", "kind", "position", "refusal")

    def __init__(self, action, channel="", data=b"", kind=None, refusal=None, position=None):
        self.action = action
        self.channel = channel
        self.data = data
        self.kind = kind
        self.position = position
        self.refusal = refusal

    def __repr__(self):
        return "ControlRequest(%r, %r, %d bytes, %r, position=%r, refusal=%r)" % (
            self.action, self.channel, len(self.data), self.kind, self.position, self.refusal)


def refused(reason, action=None):
    """A control frame (of `action`, when known) that cannot be carried out as sent."""
    return ControlRequest(action, refusal=reason)


def is_utf8(data):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- client -> PHP ----------------------------------------------------------

def encode_message(mode, opcode, payload):
    """What PHP receives for one client message (opcode 0x1 text or 0x2 binary)."""
    if mode == FRAMED:
        return _FRAME_HEADER.pack(opcode, len(payload)) + payload
    if mode == LINE:
        return payload + b"\n"
    return payload


def encode_close(code, reason=""):
    """A framed-mode close frame; code 1005 (no status) gives an empty payload."""
    if code == CloseCode.NO_STATUS or code is None:
        payload = b""
    else:
        payload = struct.pack("!H", code) + reason.encode("utf-8")
    return _FRAME_HEADER.pack(TYPE_CLOSE, len(payload)) + payload


def encode_reply(refusal=None, outcome=b""):
    """The bridge's answer to one control frame: ok (with a recovery's `outcome`, JSON), or
    refused with a one-line reason."""
    if refusal is None:
        payload = bytes((REPLY_OK,)) + outcome
    else:
        payload = bytes((REPLY_REFUSED,)) + refusal.encode("utf-8", "replace")
    return _FRAME_HEADER.pack(TYPE_REPLY, len(payload)) + payload


# -- PHP -> client ----------------------------------------------------------

class RawDecoder:
    """Every read is one binary message."""

    pending = 0

    def feed(self, data):
        return [(TYPE_BINARY, data)] if data else []

    def end(self):
        return []


def _ended_inside(what, pending):
    """PHP closed its socket with part of a message sent: the client must not see a clean close."""
    if not pending:
        return []
    return [PhpProtocolError(PHP_ERROR, "PHP ended inside a %s; %d bytes not delivered"
                             % (what, pending))]


class LineDecoder:
    """Each ``\\n``-terminated line is one message; a line over ``max_size`` is an error."""

    def __init__(self, max_size):
        self.max_size = max_size
        self._buffer = bytearray()
        self._searched = 0  # bytes already known to hold no newline

    @property
    def pending(self):
        """Bytes of an unfinished line held."""
        return len(self._buffer)

    def feed(self, data):
        buffer = self._buffer
        buffer += data
        messages = []
        start = 0
        newline = buffer.find(b"\n", self._searched)
        while newline >= 0:
            line = bytes(buffer[start:newline])
            if len(line) > self.max_size:
                return messages + [self._too_long()]
            messages.append((TYPE_TEXT if is_utf8(line) else TYPE_BINARY, line))
            start = newline + 1
            newline = buffer.find(b"\n", start)
        del buffer[:start]
        self._searched = len(buffer)
        if len(buffer) > self.max_size:
            messages.append(self._too_long())
        return messages

    def end(self):
        """What PHP closing its socket now means: an error when a line is unfinished."""
        return _ended_inside("line", self.pending)

    def _too_long(self):
        return PhpProtocolError(CloseCode.TOO_BIG, "PHP wrote a line over %d bytes" % self.max_size)


class FramedDecoder:
    """Parses type-length-payload frames; returns (type, payload) messages, Close and
    ControlRequest events.

    Text and binary frames cost one set lookup more than nothing: every other
    type is sorted out off that path. A control frame too long to be what it
    claims (a publication over the limit) is not held: its bytes are dropped
    as they arrive, then it is refused.
    """

    def __init__(self, max_size):
        self.max_size = max_size
        self._buffer = bytearray()
        self._header = None  # (type, length) of the frame being read
        self._skip_refusal = None  # the refused ControlRequest of the frame being skipped

    def feed(self, data):
        buffer = self._buffer
        buffer += data
        events = []
        try:
            while True:
                if self._header is None:
                    if len(buffer) < FRAME_HEADER_SIZE:
                        return events
                    self._header = self._parse_header(buffer)
                    del buffer[:FRAME_HEADER_SIZE]
                frame_type, length = self._header
                if len(buffer) < length:
                    if frame_type == _SKIPPED:  # never held: counted off as it comes
                        self._header = _SKIPPED, length - len(buffer)
                        del buffer[:]
                    return events
                payload = bytes(buffer[:length])
                del buffer[:length]
                self._header = None
                events.append(self._event(frame_type, payload))
        except PhpProtocolError as error:
            return events + [error]

    @property
    def pending(self):
        """Bytes of an incomplete frame held."""
        return len(self._buffer) + (FRAME_HEADER_SIZE if self._header else 0)

    def end(self):
        """What PHP closing its socket now means: an error when a frame is unfinished."""
        return _ended_inside("frame", self.pending)

    def _parse_header(self, buffer):
        frame_type, length = _FRAME_HEADER.unpack_from(buffer)
        if frame_type in _DATA_TYPES:
            if length > self.max_size:
                raise PhpProtocolError(PHP_ERROR, "PHP sent a %s frame of %d bytes (over %d)"
                                       % (_TYPE_NAMES[frame_type], length, self.max_size))
            return frame_type, length
        return self._other_header(frame_type, length)

    def _other_header(self, frame_type, length):
        if frame_type == TYPE_CLOSE:
            if length > 125:
                raise PhpProtocolError(PHP_ERROR, "PHP sent a close frame of %d bytes (over 125)"
                                       % length)
            return frame_type, length
        if frame_type not in _CONTROL_RANGE:
            raise PhpProtocolError(PHP_ERROR,
                                   "PHP sent a frame of unknown type %#04x" % frame_type)
        if frame_type not in _ACTIONS:
            return self._skip(frame_type, length,
                              "unknown control frame type %#04x" % frame_type)
        if frame_type == TYPE_PUBLISH:
            if length > _PUBLISH_HEAD.size + _MAX_CHANNEL_BYTES + self.max_size:
                return self._skip(frame_type, length, self._too_big())
        elif length > _MAX_CHANNEL_BYTES + (_MAX_POSITION_BYTES if frame_type == TYPE_SUBSCRIBE
                                            else 0):
            return self._skip(frame_type, length, "channel name longer than %d characters"
                              % MAX_CHANNEL_LENGTH)
        return frame_type, length

    def _skip(self, frame_type, length, refusal):
        self._skip_refusal = refused(refusal, _ACTIONS.get(frame_type))
        return _SKIPPED, length

    def _too_big(self):
        return "publication over %d bytes (--max-payload-size)" % self.max_size

    def _event(self, frame_type, payload):
        if frame_type == TYPE_TEXT:
            if not is_utf8(payload):
                raise PhpProtocolError(PHP_ERROR, "PHP sent a text frame that is not UTF-8")
            return TYPE_TEXT, payload
        if frame_type == TYPE_BINARY:
            return TYPE_BINARY, payload
        if frame_type == TYPE_CLOSE:
            return _parse_close(payload)
        if frame_type == _SKIPPED:
            return self._skip_refusal
        if frame_type == TYPE_PUBLISH:
            return self._publication(payload)
        if frame_type == TYPE_SUBSCRIBE and _POSITION_MARK in payload:
            return _subscription_with_position(payload)
        return ControlRequest(_ACTIONS[frame_type], _channel_name(payload))

    def _publication(self, payload):
        if len(payload) < _PUBLISH_HEAD.size:
            return refused("publish frame of %d bytes, shorter than its %d-byte head"
                           % (len(payload), _PUBLISH_HEAD.size), PUBLISH)
        kind_byte, channel_length = _PUBLISH_HEAD.unpack_from(payload)
        data_start = _PUBLISH_HEAD.size + channel_length
        if kind_byte not in PUBLICATION_KINDS:
            return refused("unknown publication kind %#04x" % kind_byte, PUBLISH)
        if data_start > len(payload):
            return refused("publish frame's channel length %d runs past its end"
                           % channel_length, PUBLISH)
        if len(payload) - data_start > self.max_size:
            return refused(self._too_big(), PUBLISH)
        return ControlRequest(PUBLISH, _channel_name(payload[_PUBLISH_HEAD.size:data_start]),
                              payload[data_start:], PUBLICATION_KINDS[kind_byte])


def _subscription_with_position(payload):
    channel, _, position = payload.partition(_POSITION_MARK)
    epoch = position[_OFFSET.size:]
    if len(position) <= _OFFSET.size or len(epoch) > MAX_EPOCH_BYTES or not epoch.isascii():
        return refused("subscribe frame's position is not an 8-byte offset and an epoch of 1 "
                       "to %d ASCII characters" % MAX_EPOCH_BYTES, SUBSCRIBE)
    return ControlRequest(SUBSCRIBE, _channel_name(channel),
                          position=(_OFFSET.unpack_from(position)[0], epoch.decode("ascii")))


def _channel_name(raw):
    # Not UTF-8: the replacement characters make the name one the hub refuses, saying why.
    return raw.decode("utf-8", "replace")


def _parse_close(payload):
    if not payload:
        return Close(CloseCode.NO_STATUS)
    if len(payload) < 2:
        raise PhpProtocolError(PHP_ERROR, "PHP sent a close frame with a 1-byte payload")
    code = struct.unpack("!H", payload[:2])[0]
    if not valid_close_code(code):
        raise PhpProtocolError(PHP_ERROR, "PHP sent the invalid close code %d" % code)
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise PhpProtocolError(PHP_ERROR,
                               "PHP sent a close reason that is not UTF-8") from None
    return Close(code, reason)


_TYPE_NAMES = {TYPE_TEXT: "text", TYPE_BINARY: "binary", TYPE_CLOSE: "close"}


def decoder(mode, max_size):
    """A fresh decoder for what PHP writes in this mode."""
    if mode == FRAMED:
        return FramedDecoder(max_size)
    if mode == LINE:
        return LineDecoder(max_size)
    return RawDecoder()
