"""One publication to a channel and the frames that carry it to clients.

A publication's frame is built the first time a subscriber needs it and then
shared by every subscriber that reads the same form: one encoding per
publication, not one per delivery. Two forms exist: the data as it was
published (text as a text message, bytes as a binary one) and, for routes
that ask for it, a JSON envelope naming the channel.
"""

import base64
import json

from greenbridge.frames import OPCODE_BINARY, OPCODE_TEXT, encode_header

TEXT = "text"  # UTF-8 text, delivered as a text message
JSON = "json"  # UTF-8 JSON text: a text message; embedded as JSON in the envelope
BINARY = "binary"  # bytes, delivered as a binary message
KINDS = (TEXT, JSON, BINARY)


class PublicationError(ValueError):
    """Data that cannot be published as the kind given; the message is one line."""


class Publication:
    __slots__ = ("channel", "data", "kind", "offset", "epoch", "_plain_frame",
                 "_envelope_frame")

    def __init__(self, channel, data, kind, offset=0, epoch=None):
        """`data` is bytes; `kind` one of KINDS, checked by ``checked_publication``.
        `offset` and `epoch` place it in its channel's history (0 and None: none kept)."""
        self.channel = channel
        self.data = data
        self.kind = kind
        self.offset = offset
        self.epoch = epoch
        self._plain_frame = None
        self._envelope_frame = None

    def frame(self, envelope):
        """The whole WebSocket frame for a subscriber (built once per form)."""
        if envelope:
            if self._envelope_frame is None:
                self._envelope_frame = _frame(OPCODE_TEXT, self.envelope())
            return self._envelope_frame
        if self._plain_frame is None:
            opcode = OPCODE_BINARY if self.kind == BINARY else OPCODE_TEXT
            self._plain_frame = _frame(opcode, self.data)
        return self._plain_frame

    def envelope(self):
        """``{"channel": ..., "data": ...}`` as UTF-8 JSON; bytes go as ``b64data``; a
        publication kept in history adds its ``offset`` and ``epoch``."""
        channel = json.dumps(self.channel)
        if self.kind == JSON:
            body = b'{"channel":%s,"data":%s' % (channel.encode(), self.data)
        elif self.kind == TEXT:
            text = json.dumps(self.data.decode("utf-8"), ensure_ascii=False)
            body = ('{"channel":%s,"data":%s' % (channel, text)).encode("utf-8")
        else:
            body = b'{"channel":%s,"b64data":"%s"' % (channel.encode(),
                                                      base64.b64encode(self.data))
        if self.epoch is None:
            return body + b"}"
        return body + b',"offset":%d,"epoch":%s}' % (self.offset, json.dumps(self.epoch).encode())


def _frame(opcode, payload):
    return encode_header(opcode, len(payload)) + payload


def checked_publication(channel, data, kind=None):
    """A Publication of `data` (bytes) to `channel` (a checked name).

    Without a kind, valid UTF-8 is text and anything else binary; a kind
    given must fit the data (text and JSON must be UTF-8, JSON must parse).
    """
    if kind is None:
        kind = TEXT if _is_utf8(data) else BINARY
    elif kind not in KINDS:
        raise PublicationError("unknown publication type %r: one of %s" % (kind, ", ".join(KINDS)))
    elif kind != BINARY and not _is_utf8(data):
        raise PublicationError("%s data must be valid UTF-8" % kind)
    if kind == JSON:
        try:
            json.loads(data, parse_constant=_refuse_constant)
        except ValueError as error:
            raise PublicationError("json data does not parse: %s" % error) from None
    return Publication(channel, data, kind)


def _refuse_constant(name):
    # Python's json reads NaN and Infinity; JSON (and browsers' JSON.parse) does not.
    raise ValueError("%s is not JSON" % name)


def _is_utf8(data):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
