"""The WebSocket frame format (RFC 6455 section 5), without I/O: the fast data path.

The header's bits and opcodes, close codes and the close frame's payload;
headers are built with one ``struct.pack`` (protocol.py parses them straight
out of a receive buffer); payloads are unmasked in C; text is checked by the
C UTF-8 codec. No Python code loops over payload bytes.
"""

import codecs
import enum
import struct

try:
    # The websockets library's C helper (word-wide XOR): about 0.1 ms per MiB.
    from websockets.speedups import apply_mask as fast_apply_mask
except ImportError:  # websockets built without its C extension
    fast_apply_mask = None

# The header's bits (RFC 6455 5.2).
FIN = 0x80
RSV_BITS = 0x70
OPCODE_BITS = 0x0F
MASKED = 0x80
LENGTH_BITS = 0x7F
LENGTH_16 = 126
LENGTH_64 = 127
MAX_CONTROL_PAYLOAD = 125

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8  # this and the higher opcodes are control frames
OPCODE_PING = 0x9
OPCODE_PONG = 0xA

_MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2

_pack_code = struct.Struct("!H").pack
_pack_short = struct.Struct("!BB").pack
_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack


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


class CloseCode(enum.IntEnum):
    """Close codes (RFC 6455 section 7.4.1 and the IANA registry)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never sent: a close frame without a code
    ABNORMAL = 1006  # never sent: the connection ended without a close frame
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014

    # Logged as the number (Python 3.9 and 3.10 would write "CloseCode.NORMAL").
    __str__ = int.__repr__


# Codes a peer may put in a close frame, besides 3000-4999.
_SENDABLE_CODES = frozenset(code for code in CloseCode
                            if code not in (CloseCode.NO_STATUS, CloseCode.ABNORMAL))


def valid_close_code(code):
    """May a peer send this close code (RFC 6455 7.4, plus the registered 1012-1014)?"""
    return code in _SENDABLE_CODES or 3000 <= code <= 4999


def encode_close_payload(code, reason):
    """Code and reason, the reason cut to 123 bytes on a character boundary; 1005: empty."""
    if code == CloseCode.NO_STATUS:
        return b""
    reason_bytes = reason.encode("utf-8")
    if len(reason_bytes) > _MAX_CLOSE_REASON:
        reason_bytes = reason_bytes[:_MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    return _pack_code(code) + reason_bytes
