"""The WebSocket frame format (RFC 6455 section 5.2), without I/O: the fast data path.

Headers are parsed straight out of a receive buffer and built with one
``struct.pack``; payloads are unmasked in C; text is checked by the C UTF-8
codec. No Python code loops over payload bytes.
"""

import codecs
import struct

try:
    # The websockets library's C helper (word-wide XOR): about 0.1 ms per MiB.
    from websockets.speedups import apply_mask as fast_apply_mask
except ImportError:  # websockets built without its C extension
    fast_apply_mask = None

# The header's bits (RFC 6455 5.2), for protocol.py too.
FIN = 0x80
RSV_BITS = 0x70
OPCODE_BITS = 0x0F
MASKED = 0x80
LENGTH_BITS = 0x7F
LENGTH_16 = 126
LENGTH_64 = 127
FIRST_CONTROL_OPCODE = 0x8
MAX_CONTROL_PAYLOAD = 125

_unpack_16 = struct.Struct("!H").unpack_from
_unpack_64 = struct.Struct("!Q").unpack_from
_pack_short = struct.Struct("!BB").pack
_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack


class FrameHeader:
    __slots__ = ("fin", "opcode", "rsv", "length", "mask", "size")

    def __init__(self, fin, opcode, rsv, length, mask, size):
        self.fin = fin
        self.opcode = opcode
        self.rsv = rsv
        self.length = length
        self.mask = mask  # the 4-byte key, or None for an unmasked frame
        self.size = size  # bytes the header takes


def parse_header(buffer, offset=0):
    """The FrameHeader at `offset`, or None while the buffer holds only part of it.

    One call per frame on the data path: finding the header's size and
    parsing it are one step, not two.
    """
    available = len(buffer) - offset
    if available < 2:
        return None
    first, second = buffer[offset], buffer[offset + 1]
    length = second & LENGTH_BITS
    masked = second & MASKED
    size = 2 + (2 if length == LENGTH_16 else 8 if length == LENGTH_64 else 0) + (4 if masked else 0)
    if available < size:
        return None
    position = offset + 2
    if length == LENGTH_16:
        length = _unpack_16(buffer, position)[0]
        position += 2
    elif length == LENGTH_64:
        length = _unpack_64(buffer, position)[0]
        position += 8
    mask = buffer[position:position + 4] if masked else None
    opcode = first & OPCODE_BITS
    fin = bool(first & FIN)
    if opcode >= FIRST_CONTROL_OPCODE:
        if not fin:
            raise _protocol_error("fragmented control frame")
        if length > MAX_CONTROL_PAYLOAD:
            raise _protocol_error("control frame of %d bytes (125 at most)" % length)
    return FrameHeader(fin, opcode, first & RSV_BITS, length, mask, size)


def _protocol_error(reason):
    """gevent-websocket's ProtocolError, which websocket.py catches.

    Imported only when raised: protocol.py imports this module and must not
    import gevent. Goes with parse_header once websocket.py reads through
    protocol.py (which parses headers itself).
    """
    from geventwebsocket.exceptions import ProtocolError
    return ProtocolError(reason)


def encode_header(opcode, length):
    """Header of a final, unmasked (server) frame."""
    first = FIN | opcode
    if length < LENGTH_16:
        return _pack_short(first, length)
    if length < 65536:
        return _pack_16(first, LENGTH_16, length)
    return _pack_64(first, LENGTH_64, length)


def unmask_without_c(payload, mask):
    """XOR the payload with the 4-byte mask: one big-integer XOR, no Python loop, ~20 ms per MiB."""
    length = len(payload)
    if not length:
        return b""
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(length, "little")


# XOR the payload with the 4-byte mask. The C helper itself, not a wrapper
# around it: this runs for every client frame.
unmask = fast_apply_mask if fast_apply_mask is not None else unmask_without_c


def check_text(message):
    """UnicodeError unless the whole message is valid UTF-8 (as TextChecker says it)."""
    codecs.utf_8_decode(message, "strict", True)


class TextChecker:
    """Checks a text message's UTF-8 as its fragments arrive (UnicodeError when invalid).

    The C codec does the work, and refuses what RFC 6455 refuses: surrogates,
    overlong forms, code points past U+10FFFF. Checking each fragment as it
    comes makes bad text fail early; a character split between two fragments
    is carried over by the incremental decoder.
    """

    __slots__ = ("_decoder",)

    def __init__(self):
        self._decoder = None

    def feed(self, fragment, final):
        if self._decoder is None:
            if final:
                check_text(fragment)
                return
            self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._decoder.decode(fragment, final)
