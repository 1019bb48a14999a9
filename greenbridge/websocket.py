"""greenbridge's fixes to gevent-websocket, as subclasses (installed packages stay untouched).

What the stock classes get wrong for a bridge, and what replaces it here:
- frames are read a few bytes at a time through several Python layers, and
  unmasked and UTF-8-checked by per-byte Python loops: here one receive
  usually brings whole frames, and frames.py parses them, unmasks in C and
  checks text with the C codec;
- each frame is written with gevent's sendall (a getsockopt and several
  Python layers per call), large ones in two sends: here one send per frame;
- no limit on message size: ``max_payload_size`` closes with 1009 before reading,
  and memory is taken as payload bytes arrive, not as a header announces them;
- no limit on fragments: a fragmented message may have at most MAX_FRAGMENTS
  frames, their headers count against its size, and it must end within
  ``message_timeout`` (else 1008);
- frames from two greenlets (pong replies, data) can interleave: one send lock;
- unmasked client frames and bad close frames are not all refused.

The upgrade itself (handler.py) lets the application refuse a request before
it is answered.
"""

import logging
import mmap
import struct
import time
from contextlib import contextmanager
from socket import IPPROTO_TCP, TCP_INFO

from gevent import Timeout
from gevent.lock import Semaphore
from geventwebsocket.exceptions import ProtocolError, WebSocketError
from geventwebsocket.websocket import WebSocket

from greenbridge.frames import TextChecker, check_text, encode_header, parse_header, unmask
from greenbridge.sockets import fast_io, send_all

log = logging.getLogger("greenbridge.websocket")

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA

# Close codes (RFC 6455, section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013

# A frame goes out in one send (header and payload copied together) up to this
# size, which covers every read from PHP at the default --buffer-size; larger
# payloads go out in a second send rather than being copied.
_COPY_LIMIT = 256 * 1024
# A client that stops reading must not hold teardown for ever.
_CLOSE_FRAME_SEND_TIMEOUT = 5.0
# Bytes asked for per receive from the client.
_RECEIVE_SIZE = 64 * 1024
# Frames one message may span. Each costs a Python object while the message is
# assembled; Autobahn's finest fragmentation case (4 MiB in 64-byte frames) sends this many.
MAX_FRAGMENTS = 65536
# tcp_info.tcpi_state (the first byte) of a connection both sides still hold open.
_TCP_ESTABLISHED = 1


class MessageTooBig(WebSocketError):
    """A client message is larger than the bridge takes (close 1009)."""


class MessageTooSlow(WebSocketError):
    """A fragmented client message stayed open past --message-timeout (close 1008)."""


def valid_close_code(code):
    """Close codes a peer may send (RFC 6455 7.4, plus the registered 1012-1014)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) \
        or 3000 <= code <= 4999


def encode_close_payload(code, reason):
    """Code and reason, the reason cut to 123 bytes on a character boundary; 1005: empty."""
    if code == CLOSE_NO_STATUS:
        return b""
    reason_bytes = reason.encode("utf-8")
    if len(reason_bytes) > 123:
        reason_bytes = reason_bytes[:123].decode("utf-8", "ignore").encode("utf-8")
    return struct.pack("!H", code) + reason_bytes


class BridgeWebSocket(WebSocket):
    """A server-side WebSocket that reads whole messages as bytes, fast and bounded."""

    __slots__ = ("max_payload_size", "message_timeout", "_room", "_send_lock",
                 "_frame_half_sent", "close_sent",
                 "peer_close_code", "peer_close_reason", "close_code", "close_reason",
                 "_socket", "_io", "_receive", "_receive_into", "_buffer", "_offset",
                 "last_received")

    def __init__(self, environ, stream, handler, max_payload_size, message_timeout):
        super().__init__(environ, stream, handler)
        self.max_payload_size = max_payload_size
        # Seconds a fragmented message may stay open (0: no limit).
        self.message_timeout = message_timeout
        # Payload bytes the next data frame may bring: max_payload_size, less
        # inside a fragmented message.
        self._room = max_payload_size
        self._socket = handler.socket
        # Frames are received straight from the socket: a receive that waits
        # holds no buffer (the handler's buffered reader would hold one per
        # idle connection). What that reader holds already came right behind
        # the upgrade request: it is the start of the frames.
        self._buffer = _take_buffered(handler.rfile, self._socket)
        self._io = fast_io(self._socket)
        self._receive = self._io.recv
        self._receive_into = self._io.recv_into
        self._offset = 0
        self._send_lock = Semaphore()
        self._frame_half_sent = False
        self.close_sent = False
        # What the client sent in its close frame, if it sent one.
        self.peer_close_code = None
        self.peer_close_reason = ""
        # What ended the connection from our side of view (for the access log).
        self.close_code = None
        self.close_reason = ""
        # When the client last sent a frame of any kind (heartbeats ping after a quiet spell).
        self.last_received = time.monotonic()

    def __del__(self):
        # The stock class sends a close frame from the garbage collector.
        pass

    # -- reading ---------------------------------------------------------

    def receive_message(self):
        """Return (opcode, payload bytes) for the next data message, or None when it ended.

        Protocol errors close the connection with the right code before
        returning None; ``close_code`` tells what happened.
        """
        if self.closed:
            return None
        try:
            return self._read_message()
        except MessageTooBig as error:
            self.close(CLOSE_TOO_BIG, str(error))
        except MessageTooSlow as error:
            self.close(CLOSE_POLICY_VIOLATION, str(error))
        except UnicodeError:
            self.close(CLOSE_INVALID_DATA, "invalid UTF-8 in text message")
        except ProtocolError as error:
            self.close(CLOSE_PROTOCOL_ERROR, str(error) or "protocol error")
        except (OSError, WebSocketError):
            # The client vanished without a close frame.
            self.mark_disconnected()
        return None

    def _read_message(self):
        while True:
            header, payload = self._read_frame()
            opcode = header.opcode
            if opcode == OPCODE_BINARY or opcode == OPCODE_TEXT:
                if not header.fin:
                    return self._read_fragmented_message(header, payload)
                # The usual message, one frame (its size already checked by _read_frame).
                if opcode == OPCODE_TEXT:
                    check_text(payload)
                return opcode, payload
            if opcode == OPCODE_CONTINUATION:
                raise ProtocolError("continuation frame without a message")
            if not self._handle_control_frame(opcode, payload):
                return None

    def _read_fragmented_message(self, header, payload):
        """The message a non-final first frame starts, as (opcode, payload); None on a close.

        Every frame's header counts against the message's size, so empty
        frames are not free, and the frames must all come within
        ``message_timeout``.
        """
        opcode = header.opcode
        text = TextChecker() if opcode == OPCODE_TEXT else None
        fragments = []
        size = frames = 0
        deadline = None
        if self.message_timeout:
            deadline = Timeout.start_new(self.message_timeout, MessageTooSlow(
                "message not complete within %gs" % self.message_timeout))
        try:
            while True:
                frames += 1
                if frames > MAX_FRAGMENTS:
                    raise MessageTooBig("message in more than %d frames" % MAX_FRAGMENTS)
                size += header.size + len(payload)
                if size > self.max_payload_size:
                    raise MessageTooBig("message over %d bytes (frame headers included)"
                                        % self.max_payload_size)
                if text is not None:
                    text.feed(payload, header.fin)
                if payload:
                    fragments.append(payload)
                if header.fin:
                    return opcode, b"".join(fragments)  # one fragment: itself, not a copy
                self._room = self.max_payload_size - size
                header, payload = self._read_frame()
                while header.opcode != OPCODE_CONTINUATION:
                    if header.opcode in (OPCODE_TEXT, OPCODE_BINARY):
                        raise ProtocolError("new message started inside a fragmented one")
                    if not self._handle_control_frame(header.opcode, payload):
                        return None
                    header, payload = self._read_frame()
        finally:
            self._room = self.max_payload_size
            if deadline is not None:
                deadline.close()

    def _handle_control_frame(self, opcode, payload):
        """Answer a ping, drop a pong, handle a close; False when the close ended the reading."""
        if opcode == OPCODE_PING:
            self.send_frame(payload, OPCODE_PONG)
        elif opcode == OPCODE_CLOSE:
            self._handle_close_frame(payload)
            return False
        elif opcode != OPCODE_PONG:
            raise ProtocolError("reserved opcode %#x" % opcode)
        return True

    def _read_frame(self):
        header = parse_header(self._buffer, self._offset)
        while header is None:  # only part of the header is here yet
            self._receive_more()
            header = parse_header(self._buffer, self._offset)
        self._offset += header.size
        self.last_received = time.monotonic()
        if header.rsv:
            raise ProtocolError("reserved bits set without an extension")
        if header.mask is None:
            raise ProtocolError("client frame not masked")
        if header.length > self._room and header.opcode < OPCODE_CLOSE:
            raise MessageTooBig("message over %d bytes" % self.max_payload_size)
        if not header.length:
            return header, b""
        return header, self._unmasked_payload(header.length, header.mask)

    # The receive buffer: bytes from the client not parsed yet start at _offset.
    # One receive usually brings a whole frame or several; nothing is read
    # byte by byte, and a large payload is received straight into its buffer,
    # which takes memory only as the payload arrives.

    def _receive_more(self):
        """Add one receive to the unparsed bytes."""
        chunk = self._receive(_RECEIVE_SIZE)
        if not chunk:
            raise WebSocketError("connection ended inside a frame")
        if self._offset == len(self._buffer):
            self._buffer = chunk  # the usual case, all parsed: nothing to copy
        else:
            self._buffer = self._buffer[self._offset:] + chunk
        self._offset = 0

    def _unmasked_payload(self, count, mask):
        """The next `count` bytes, unmasked."""
        start = self._offset
        if len(self._buffer) - start >= count:  # the usual case: all here
            self._offset = start + count
            return unmask(self._buffer[start:start + count], mask)
        if count <= _RECEIVE_SIZE:
            payload = bytearray(count)
            self._receive_payload(payload)
            return unmask(payload, mask)
        with _large_payloads.buffer(count) as payload:
            self._receive_payload(payload)
            return unmask(payload, mask)

    def _receive_payload(self, payload):
        """Fill `payload` with the unparsed bytes, then with receives straight into it."""
        have = len(self._buffer) - self._offset
        payload[:have] = memoryview(self._buffer)[self._offset:]
        self._buffer, self._offset = b"", 0
        missing = memoryview(payload)[have:]
        while missing:
            received = self._receive_into(missing)
            if not received:
                raise WebSocketError("connection ended inside a frame")
            missing = missing[received:]

    def _handle_close_frame(self, payload):
        if not payload:
            code, reason = CLOSE_NO_STATUS, ""
        elif len(payload) < 2:
            raise ProtocolError("close frame with a 1-byte payload")
        else:
            code = struct.unpack("!H", payload[:2])[0]
            if not valid_close_code(code):
                raise ProtocolError("invalid close code %d" % code)
            reason = payload[2:].decode("utf-8")
        self.peer_close_code, self.peer_close_reason = code, reason
        # Echo the client's code, as RFC 6455 5.5.1 asks.
        reply = CLOSE_NORMAL if code == CLOSE_NO_STATUS else code
        self.close(reply, "", _record=(code, reason or "client closed"))

    # -- writing ---------------------------------------------------------

    def send_frame(self, payload, opcode):
        if self.closed:
            raise WebSocketError("connection is closed")
        header = encode_header(opcode, len(payload))
        with self._send_lock:
            self._frame_half_sent = True
            if len(payload) <= _COPY_LIMIT:
                send_all(self._io, header + payload)
            else:
                send_all(self._io, header)
                send_all(self._io, payload)
            self._frame_half_sent = False

    def close(self, code=CLOSE_NORMAL, reason="", _record=None):
        """Send one close frame (if the stream still allows it) and mark the socket closed."""
        if not self.closed and not self.close_sent and not self._frame_half_sent:
            self.close_sent = True
            try:
                with Timeout(_CLOSE_FRAME_SEND_TIMEOUT):
                    self.send_frame(encode_close_payload(code, reason), OPCODE_CLOSE)
            except (OSError, WebSocketError, Timeout):
                log.debug("could not send close frame %d", code)
        self._mark_closed(*(_record or (code, reason)))

    # -- the client's TCP connection ------------------------------------

    def client_connected(self):
        """False once the client's TCP connection ended (FIN or RST), even with frames unread.

        Asks the kernel for the connection's state, so it neither reads nor blocks.
        """
        try:
            state = self._socket.getsockopt(IPPROTO_TCP, TCP_INFO, 1)[0]
        except (OSError, AttributeError):
            return False
        return state == _TCP_ESTABLISHED

    def mark_disconnected(self):
        self._mark_closed(CLOSE_ABNORMAL, "client disconnected without close frame")

    def _mark_closed(self, code, reason):
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self.closed = True


class _LargePayloads:
    """Buffers for payloads larger than one receive: anonymous mappings.

    A bytearray is zero-filled at once, so a header announcing 16 MiB would
    cost 16 MiB before any of it came. The kernel gives a mapping's pages
    memory only when the receive writes them, and the payload is still
    received in place, with no copy. The mapping of the last payload read
    whole is kept for the next one (one per process, as large as the largest
    payload): its pages are already there, so a stream of large frames costs
    no page faults, as reusing freed heap memory did for the bytearray.
    """

    def __init__(self):
        self._spare = None

    @contextmanager
    def buffer(self, count):
        mapping = self._spare
        if mapping is not None and len(mapping) >= count:
            self._spare = None
        else:
            mapping = mmap.mmap(-1, count, flags=mmap.MAP_PRIVATE)
        # A memoryview: unmask (websockets' C helper) takes it, not the mapping itself.
        yield memoryview(mapping)[:count]
        # The payload was read whole (a failed read drops its mapping with the connection).
        if self._spare is None or len(self._spare) < len(mapping):
            self._spare = mapping


_large_payloads = _LargePayloads()


def _take_buffered(reader, sock):
    """The bytes `reader` (the socket's buffered reader) holds, without waiting for more.

    The reader is closed, which frees its buffer; the socket stays open.
    """
    timeout = sock.gettimeout()
    sock.settimeout(0.0)  # an empty buffer then costs one receive that does not wait
    try:
        buffered = reader.read1(_RECEIVE_SIZE) or b""
    except OSError:
        buffered = b""
    finally:
        sock.settimeout(timeout)
    reader.close()
    return buffered
