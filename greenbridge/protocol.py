"""The WebSocket protocol, server side, without I/O: bytes in, events and bytes out.

``ServerProtocol`` is what RFC 6455 asks of a server once the upgrade is
answered: frames parsed and built, fragments joined, control frames answered,
text checked as UTF-8, the close handshake, and greenbridge's limits. It has
no socket, gevent or clock: the transport feeds it what it receives
(``receive_data``, or ``receive_buffer``/``received_into`` to receive a
large payload in place), sends what ``data_to_send`` returns, and handles
what ``events_received`` returns:

- ``(opcode, payload)``: a whole text (0x1) or binary (0x2) message, as bytes;
- ``CloseReceived``: the client's close frame; the reply is in ``data_to_send``;
- ``ProtocolFailure``: the client broke the protocol or a limit; the close
  frame with its code is in ``data_to_send``.

Received bytes are parsed only up to the next event, the rest when the
transport asks for more: what the client sent after a message (a ping, a
close, an error) is acted on once the transport took that message, as a
blocking reader would. So a client whose messages wait for a slow PHP gets no
pong meanwhile (back-pressure), its close is answered after the messages it
sent before, and a receive full of small messages is not held as that many
objects. Nothing follows a close event. A time limit on a fragmented message
is the transport's (``message_in_progress`` says when one is open; ``fail``
ends it).

Why not python-websockets' own core (``websockets.protocol``): measured with
``scripts/bench_core.py``, it takes two to three times greenbridge's time per
small message, copies large payloads three more times, and leaves to its
caller what the bridge must enforce (text UTF-8, a limit on fragments,
control frames refused before their payload is read, the close reply after
the messages before it). This core keeps the fast path of frames.py: a
receive usually holds whole frames, parsed straight out of it; payloads are
unmasked in C; text is checked by the C codec; a large payload is received
straight into its buffer.
"""

import struct

from greenbridge.buffers import large_payloads
from greenbridge.frames import (FIN, LENGTH_16, LENGTH_64, LENGTH_BITS, MASKED,
                                MAX_CONTROL_PAYLOAD, OPCODE_BINARY, OPCODE_BITS, OPCODE_CLOSE,
                                OPCODE_CONTINUATION, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT,
                                RSV_BITS, CloseCode, TextChecker, check_text, encode_close_payload,
                                encode_header, unmask, valid_close_code)

# Frames one message may span. Each costs a Python object while the message is
# assembled; Autobahn's finest fragmentation case (4 MiB in 64-byte frames) sends this many.
MAX_FRAGMENTS = 65536
# A payload that is not all in the receive buffer gets its own buffer, which
# the transport receives into; above this size that is an anonymous mapping
# (see buffers.py). The transport's receive size.
RECEIVE_SIZE = 64 * 1024
# A frame up to this size is one bytes object to send (header and payload
# copied together: one send); a larger payload is sent as it is, after its header.
COPY_LIMIT = 256 * 1024

# The reason for any invalid UTF-8 (a close reason's too).
_INVALID_UTF8 = "invalid UTF-8 in text message"

_unpack_16 = struct.Struct("!H").unpack_from
_unpack_64 = struct.Struct("!Q").unpack_from


class Close:
    """A close frame's content: a code (1005: none given) and a reason."""

    __slots__ = ("code", "reason")

    def __init__(self, code, reason=""):
        self.code = code
        self.reason = reason

    def __eq__(self, other):
        return type(self) is type(other) and (self.code, self.reason) == (other.code, other.reason)

    def __repr__(self):
        return "%s(%d, %r)" % (type(self).__name__, self.code, self.reason)


class CloseReceived(Close):
    """Event: the client closed with this code and reason."""


class ProtocolFailure(Close):
    """Event: the client broke the protocol or a limit; closed with this code, for this reason."""


class InvalidState(Exception):
    """A frame was to be sent after our close frame."""


class _Failure(Exception):
    """Raised inside the parser; becomes a ProtocolFailure."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code


class ServerProtocol:
    """One WebSocket connection, server side, after the upgrade (see the module docstring)."""

    __slots__ = ("max_payload_size", "close_sent", "close_received", "_events", "writes",
                 "_buffer", "_offset", "_room", "_fragments", "_fragments_opcode",
                 "_fragments_size", "_text", "_payload", "_payload_filled", "_payload_frame",
                 "_payload_mapping", "_ended")

    def __init__(self, max_payload_size):
        self.max_payload_size = max_payload_size
        # What went each way in the close handshake (a Close), once it did.
        self.close_sent = None
        self.close_received = None
        self._events = []
        # Bytes for data_to_send, oldest first (a transport may look whether there are any).
        self.writes = []
        # Received bytes not parsed yet: _buffer from _offset.
        self._buffer = b""
        self._offset = 0
        # Payload bytes the next data frame may bring: max_payload_size, less
        # inside a fragmented message.
        self._room = max_payload_size
        # The fragmented message being received: its payloads, opcode, size
        # (frame headers included) and UTF-8 checker (text only).
        self._fragments = None
        self._fragments_opcode = None
        self._fragments_size = 0
        self._text = None
        # A payload larger than what was received yet: its buffer, how much of
        # it is filled, its frame's (opcode, fin, header size, mask), and the
        # mapping the buffer is a view of (large payloads only).
        self._payload = None
        self._payload_filled = 0
        self._payload_frame = None
        self._payload_mapping = None
        # True once a close event was given: nothing more is parsed.
        self._ended = False

    # -- what the transport calls --------------------------------------------------

    def receive_data(self, data):
        """Take bytes received from the client (parsed as far as the next event)."""
        if self._ended or not data:
            return
        if self._payload is not None:
            data = self._fill_payload(data)
            if self._payload is not None or self._ended or not data:
                return
        if self._offset == len(self._buffer):
            self._buffer = data  # the usual case, all parsed before: nothing to copy
        else:
            self._buffer = self._buffer[self._offset:] + data
        self._offset = 0
        if not self._events:
            self._parse()

    def receive_buffer(self):
        """Where the next received bytes should go (a writable memoryview), or None.

        Not None while a payload larger than what came so far is received:
        receiving straight into it (then ``received_into``) saves a copy, and
        a large payload takes memory only as it arrives. Else the transport
        receives up to RECEIVE_SIZE bytes and calls ``receive_data``.
        """
        if self._payload is None:
            return None
        return memoryview(self._payload)[self._payload_filled:]

    def received_into(self, count):
        """`count` bytes were received into what ``receive_buffer`` returned."""
        self._payload_filled += count
        if self._payload_filled == len(self._payload):
            self._payload_complete()

    def events_received(self):
        """The next event the received bytes complete, in a list; () when they complete none.

        Call it until it returns () before receiving more: bytes are parsed
        only as far as the next event (see the module docstring).
        """
        events = self._events
        if not events:
            if self._offset == len(self._buffer):
                return ()  # all parsed (nothing allocated when a receive completed nothing)
            self._parse()
            events = self._events
            if not events:
                return ()
        self._events = []
        return events

    def data_to_send(self):
        """The bytes to send to the client now, in order (a list of bytes-like objects)."""
        writes = self.writes
        if not writes:
            return ()
        self.writes = []
        return writes

    @property
    def message_in_progress(self):
        """True from a fragmented message's first frame to its last."""
        return self._fragments is not None

    def send_text(self, payload):
        """Send a text message (UTF-8 bytes) in one frame."""
        self.send_data(OPCODE_TEXT, payload)

    def send_binary(self, payload):
        """Send a binary message in one frame."""
        self.send_data(OPCODE_BINARY, payload)

    def send_data(self, opcode, payload):
        """Send a message of this opcode in one frame (the pumps' call: they have the opcode)."""
        if self.close_sent is not None:
            raise InvalidState("close frame already sent")
        header = encode_header(opcode, len(payload))
        if len(payload) <= COPY_LIMIT:
            self.writes.append(header + payload)
        else:
            self.writes += (header, payload)  # the payload itself, not a copy

    def send_ping(self, payload=b""):
        self.send_data(OPCODE_PING, payload)

    def send_close(self, code=CloseCode.NORMAL, reason=""):
        """Start (or answer) the close handshake; a second call sends nothing."""
        if self.close_sent is None:
            self.send_data(OPCODE_CLOSE, encode_close_payload(code, reason))
            self.close_sent = Close(code, reason)

    def fail(self, code, reason):
        """End the connection for a reason the transport found (say, a message too slow)."""
        if not self._ended:
            self._fail(code, reason)

    # -- receiving -------------------------------------------------------------

    def _parse(self):
        """Parse the buffer up to the next event; start a payload buffer for a cut frame.

        The usual frame (a whole, masked, unfragmented data message) is
        handled here without further calls: this runs for every client message.
        """
        buffer, offset = self._buffer, self._offset
        end = len(buffer)
        events = self._events
        try:
            while end - offset >= 2:
                first, second = buffer[offset], buffer[offset + 1]
                length = second & LENGTH_BITS
                size = 2 + (2 if length == LENGTH_16 else 8 if length == LENGTH_64 else 0) \
                    + (4 if second & MASKED else 0)
                if end - offset < size:
                    break  # only part of the header is here yet
                if length == LENGTH_16:
                    length = _unpack_16(buffer, offset + 2)[0]
                elif length == LENGTH_64:
                    length = _unpack_64(buffer, offset + 2)[0]
                opcode = first & OPCODE_BITS
                if first & RSV_BITS or not second & MASKED or opcode >= OPCODE_CLOSE \
                        or length > self._room:
                    self._check_header(first, second, opcode, length)
                start = offset + size
                mask = buffer[start - 4:start]
                offset = start + length
                if offset > end:  # the payload goes on past what came
                    self._start_payload(buffer, start, end, length,
                                        (opcode, first & FIN, size, mask))
                    return
                payload = unmask(buffer[start:offset], mask) if length else b""
                if first & FIN and opcode <= OPCODE_BINARY and opcode and self._fragments is None:
                    # The usual message, one frame, as _frame would take it (a call less).
                    if opcode == OPCODE_TEXT:
                        try:
                            check_text(payload)
                        except UnicodeError:
                            raise _Failure(CloseCode.INVALID_DATA, _INVALID_UTF8) from None
                    events.append((opcode, payload))
                    break
                self._frame(opcode, first & FIN, size, payload)
                if self._ended:
                    return
                if events:  # a message completed
                    break
        except _Failure as failure:
            self._fail(failure.code, str(failure))
            return
        self._offset = offset

    def _check_header(self, first, second, opcode, length):
        """Raise the failure a frame's header shows, if any (control frames' limits first)."""
        if opcode >= OPCODE_CLOSE:
            if not first & FIN:
                raise _Failure(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise _Failure(CloseCode.PROTOCOL_ERROR,
                               "control frame of %d bytes (125 at most)" % length)
        if first & RSV_BITS:
            raise _Failure(CloseCode.PROTOCOL_ERROR, "reserved bits set without an extension")
        if not second & MASKED:
            raise _Failure(CloseCode.PROTOCOL_ERROR, "client frame not masked")
        if length > self._room and opcode < OPCODE_CLOSE:
            raise _Failure(CloseCode.TOO_BIG, "message over %d bytes" % self.max_payload_size)

    def _start_payload(self, buffer, start, end, length, frame):
        """The frame's payload is longer than what came: give it a buffer, holding what did."""
        if length <= RECEIVE_SIZE:
            self._payload = bytearray(length)
        else:
            self._payload_mapping = large_payloads.take(length)
            self._payload = memoryview(self._payload_mapping)[:length]
        have = end - start
        self._payload[:have] = memoryview(buffer)[start:end]
        self._payload_filled = have
        self._payload_frame = frame
        self._buffer, self._offset = b"", 0

    def _fill_payload(self, data):
        """Copy received bytes into the payload buffer; return what follows the payload."""
        missing = len(self._payload) - self._payload_filled
        taken = memoryview(data)[:missing]
        self._payload[self._payload_filled:self._payload_filled + len(taken)] = taken
        self.received_into(len(taken))
        return data[missing:]

    def _payload_complete(self):
        payload, (opcode, fin, size, mask) = self._payload, self._payload_frame
        unmasked = unmask(payload, mask)
        if self._payload_mapping is not None:
            large_payloads.give_back(self._payload_mapping)
        self._payload = self._payload_frame = self._payload_mapping = None
        try:
            self._frame(opcode, fin, size, unmasked)
        except _Failure as failure:
            self._fail(failure.code, str(failure))

    def _frame(self, opcode, fin, header_size, payload):
        """Act on one whole frame."""
        if opcode == OPCODE_TEXT or opcode == OPCODE_BINARY:
            if self._fragments is not None:
                raise _Failure(CloseCode.PROTOCOL_ERROR,
                               "new message started inside a fragmented one")
            if fin:  # the usual message, one frame (its size already checked)
                if opcode == OPCODE_TEXT:
                    _check_utf8(check_text, payload)
                self._events.append((opcode, payload))
                return
            self._fragments, self._fragments_opcode, self._fragments_size = [], opcode, 0
            self._text = TextChecker() if opcode == OPCODE_TEXT else None
            self._add_fragment(fin, header_size, payload)
        elif opcode == OPCODE_CONTINUATION:
            if self._fragments is None:
                raise _Failure(CloseCode.PROTOCOL_ERROR, "continuation frame without a message")
            self._add_fragment(fin, header_size, payload)
        elif opcode == OPCODE_PING:
            if self.close_sent is None:  # no frame may follow our close
                self.send_data(OPCODE_PONG, payload)
        elif opcode == OPCODE_CLOSE:
            self._close_frame(payload)
        elif opcode != OPCODE_PONG:
            raise _Failure(CloseCode.PROTOCOL_ERROR, "reserved opcode %#x" % opcode)

    def _add_fragment(self, fin, header_size, payload):
        """One frame of a fragmented message: its header counts against the message's size."""
        fragments = self._fragments
        if len(fragments) >= MAX_FRAGMENTS:
            raise _Failure(CloseCode.TOO_BIG, "message in more than %d frames" % MAX_FRAGMENTS)
        self._fragments_size += header_size + len(payload)
        if self._fragments_size > self.max_payload_size:
            raise _Failure(CloseCode.TOO_BIG, "message over %d bytes (frame headers included)"
                           % self.max_payload_size)
        if self._text is not None:
            _check_utf8(self._text.feed, payload, fin)
        fragments.append(payload)
        if fin:
            self._events.append((self._fragments_opcode, b"".join(fragments)))
            self._end_message()
        else:
            self._room = self.max_payload_size - self._fragments_size

    def _end_message(self):
        self._fragments = self._fragments_opcode = self._text = None
        self._room = self.max_payload_size

    def _close_frame(self, payload):
        if not payload:
            code, reason = CloseCode.NO_STATUS, ""
        elif len(payload) < 2:
            raise _Failure(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
        else:
            code = _unpack_16(payload)[0]
            if not valid_close_code(code):
                raise _Failure(CloseCode.PROTOCOL_ERROR, "invalid close code %d" % code)
            reason = _check_utf8(payload[2:].decode, "utf-8")
        self.close_received = CloseReceived(code, reason)
        # Echo the client's code, as RFC 6455 5.5.1 asks (1000 for none), without its reason.
        self.send_close(CloseCode.NORMAL if code == CloseCode.NO_STATUS else code)
        self._end(self.close_received)

    def _fail(self, code, reason):
        self.send_close(code, reason)
        self._end(ProtocolFailure(code, reason))

    def _end(self, event):
        """Give the close event; from now on nothing received counts."""
        self._events.append(event)
        self._ended = True
        self._end_message()
        self._payload = self._payload_frame = self._payload_mapping = None
        self._buffer, self._offset = b"", 0


def _check_utf8(check, *arguments):
    """check(*arguments), a UTF-8 decoding, with invalid UTF-8 as a failure (1007)."""
    try:
        return check(*arguments)
    except UnicodeError:
        raise _Failure(CloseCode.INVALID_DATA, _INVALID_UTF8) from None
