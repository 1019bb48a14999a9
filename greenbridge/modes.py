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
  close code and a UTF-8 reason).
"""

import struct

from greenbridge.frames import OPCODE_BINARY, OPCODE_TEXT, CloseCode, valid_close_code
from greenbridge.settings.values import FRAMED, LINE

# Frame types of the framed mode; text and binary are the WebSocket opcodes.
TYPE_TEXT = OPCODE_TEXT
TYPE_BINARY = OPCODE_BINARY
TYPE_CLOSE = 0x8

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
    """Parses type-length-payload frames; returns (type, payload) messages and Close."""

    def __init__(self, max_size):
        self.max_size = max_size
        self._buffer = bytearray()
        self._header = None  # (type, length) of the frame being read

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
        if frame_type not in (TYPE_TEXT, TYPE_BINARY, TYPE_CLOSE):
            raise PhpProtocolError(PHP_ERROR,
                                   "PHP sent a frame of unknown type %#04x" % frame_type)
        limit = 125 if frame_type == TYPE_CLOSE else self.max_size
        if length > limit:
            raise PhpProtocolError(PHP_ERROR, "PHP sent a %s frame of %d bytes (over %d)"
                                   % (_TYPE_NAMES[frame_type], length, limit))
        return frame_type, length

    @staticmethod
    def _event(frame_type, payload):
        if frame_type == TYPE_TEXT:
            if not is_utf8(payload):
                raise PhpProtocolError(PHP_ERROR, "PHP sent a text frame that is not UTF-8")
            return TYPE_TEXT, payload
        if frame_type == TYPE_BINARY:
            return TYPE_BINARY, payload
        return _parse_close(payload)


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
