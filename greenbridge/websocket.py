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
- unmasked client frames and bad close frames are not all refused;
- the upgrade is answered before the application can refuse it: ``BridgeHandler``
  lets the application check and admit the request first, so a full server
  answers 503 and never spawns anything; under the stock handler (gunicorn)
  the application adopts the stock WebSocket instead.
"""

import base64
import hashlib
import logging
import mmap
import struct
import time
from contextlib import contextmanager
from socket import IPPROTO_TCP, SO_SNDBUF, SOL_SOCKET, TCP_INFO, TCP_NODELAY

from gevent import Timeout
from gevent.lock import Semaphore
from geventwebsocket.exceptions import ProtocolError, WebSocketError

from greenbridge.adapters.gevent_websocket import Stream, UpgradeLaterHandler, WebSocket
from greenbridge.frames import TextChecker, check_text, encode_header, parse_header, unmask
from greenbridge.sockets import fast_io, send_all

from greenbridge.handshake import (MAX_HANDSHAKE_BYTES, UNLIMITED_HANDSHAKES, CappedReader,
                                   HandshakeAborted, HandshakeTooLarge)
from greenbridge.http_token import is_token
from greenbridge.logs import format_address

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

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
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

_HEADERS_TOO_LARGE_RESPONSE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                               b"Connection: close\r\nContent-Length: 0\r\n\r\n")
BAD_REQUEST_RESPONSE = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


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


class Rejected(Exception):
    """The request is answered with an HTTP error instead of an upgrade.

    ``kind`` is the metrics label: limit, origin, bad_request, shutting_down...
    """

    def __init__(self, status, reason, headers=(), kind=None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)
        self.kind = kind or _REJECTION_KINDS.get(status[:3], "bad_request")


_REJECTION_KINDS = {"503": "limit", "403": "origin", "404": "route"}


def wants_websocket(environ):
    """Does the request ask for a WebSocket (well-formed or not)?"""
    return _names_websocket(environ.get("HTTP_UPGRADE", ""))


def _names_websocket(upgrade_header):
    return "websocket" in [token.strip() for token in upgrade_header.lower().split(",")]


class MalformedRequest(ValueError):
    """A request gevent would pass on that greenbridge answers with 400."""


def check_header_section(headers):
    """Raise MalformedRequest for a header section that cannot be taken as it came.

    http.client keeps an obsolete line folding (RFC 9112 5.2) inside the value
    and drops lines it cannot parse (recording a defect); an upgrade request
    has no body, and waiting for one would hold the connection.
    """
    if headers.defects:
        raise MalformedRequest("malformed header section (%s)" % type(headers.defects[0]).__name__)
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise MalformedRequest("obsolete line folding in header %r" % name[:64])
    if _names_websocket(headers.get("Upgrade", "")) and (
            int(headers.get("Content-Length") or 0) or "Transfer-Encoding" in headers):
        raise MalformedRequest("WebSocket upgrade request with a body")


def check_upgrade_request(environ, request_version):
    """Raise Rejected unless the request is a well-formed RFC 6455 upgrade."""
    if not wants_websocket(environ):
        raise Rejected("426 Upgrade Required", "not a WebSocket upgrade request",
                       [("Upgrade", "websocket"), ("Connection", "Upgrade")])
    if environ.get("REQUEST_METHOD") != "GET":
        raise Rejected("400 Bad Request", "WebSocket upgrade must use GET")
    if request_version != "HTTP/1.1":
        raise Rejected("400 Bad Request", "WebSocket upgrade needs HTTP/1.1")
    connection = [token.strip() for token in environ.get("HTTP_CONNECTION", "").lower().split(",")]
    if "upgrade" not in connection:
        raise Rejected("400 Bad Request", "Connection header lacks 'upgrade'")
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        raise Rejected("426 Upgrade Required", "unsupported Sec-WebSocket-Version",
                       [("Sec-WebSocket-Version", "13")])
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise Rejected("400 Bad Request", "invalid Sec-WebSocket-Key") from None


def accept_key(key):
    digest = hashlib.sha1((key.strip() + WEBSOCKET_GUID).encode("latin-1")).digest()
    return base64.b64encode(digest).decode("ascii")


def rejection_response(start_response, rejection):
    """Answer a refused request in plain WSGI; returns the body iterable."""
    body = (rejection.reason + "\n").encode("utf-8")
    start_response(rejection.status, rejection.headers + [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close")])
    return [body]


class PendingUpgrade:
    """What BridgeHandler puts in the environ as ``greenbridge.upgrade``.

    The application checks the request (``check``), decides whether to admit
    it, and only then calls ``accept``, which answers 101: a refused request
    gets a plain HTTP error and costs no process. Middleware around the
    application sees ordinary WSGI calls.
    """

    def __init__(self, handler):
        self._handler = handler

    def check(self):
        check_upgrade_request(self._handler.environ, self._handler.request_version)

    def accept(self, max_payload_size, message_timeout, socket_buffer_size, subprotocol=None):
        """Answer 101 Switching Protocols; return the BridgeWebSocket."""
        handler = self._handler
        environ = handler.environ
        _tune_client_socket(handler.socket, socket_buffer_size)
        websocket = BridgeWebSocket(environ, Stream(handler), handler, max_payload_size,
                                    message_timeout)
        handler.websocket = websocket
        environ["wsgi.websocket"] = websocket
        environ["wsgi.websocket_version"] = "13"
        headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                   ("Sec-WebSocket-Accept", accept_key(environ["HTTP_SEC_WEBSOCKET_KEY"]))]
        if subprotocol:
            headers.append(("Sec-WebSocket-Protocol", subprotocol))
        handler.start_response("101 Switching Protocols", headers)
        handler.write(b"")
        handler.handshakes.end()
        return websocket


def adopt_stock_websocket(stock, max_payload_size, message_timeout, socket_buffer_size):
    """A BridgeWebSocket on the stream of gevent-websocket's own, already upgraded, WebSocket.

    Under a stock WebSocketHandler (gunicorn's GeventWebSocketWorker) the 101
    went out before the application ran; from here on greenbridge's class
    reads and writes the frames. The stock object is marked closed so that
    its handler does not send a second close frame.
    """
    _tune_client_socket(stock.handler.socket, socket_buffer_size)
    websocket = BridgeWebSocket(stock.environ, stock.stream, stock.handler, max_payload_size,
                                message_timeout)
    stock.closed = True
    return websocket


def _tune_client_socket(sock, socket_buffer_size):
    sock.setsockopt(SOL_SOCKET, SO_SNDBUF, socket_buffer_size)
    # Each frame goes out in one send already: Nagle's algorithm could only
    # hold a small reply back until the client acknowledges the previous one.
    sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)


class BridgeHandler(UpgradeLaterHandler):
    """Hands every request to the WSGI application, upgrades only when it accepts.

    gevent-websocket's own handler answers 101 before the application runs.
    This one offers the upgrade as ``environ["greenbridge.upgrade"]`` (see
    PendingUpgrade) and otherwise behaves as a plain WSGI handler.

    Each request is read under the limits of ``handshake.py``: 16 KiB, and,
    under a server that keeps the ``handshakes`` register (greenbridge's own,
    gunicorn_worker's), the connection's one budget until the 101 answer.
    A server that shares its port with other applications (gunicorn) sets
    ``port_shared``: the time such an application spends on a plain request
    is its own.
    """

    @property
    def handshakes(self):
        return getattr(self.server, "handshakes", UNLIMITED_HANDSHAKES)

    def handle(self):
        try:
            super().handle()
        except (HandshakeAborted, ConnectionError) as ended:
            # Gone while its request was read or answered (gevent sends error answers unguarded).
            log.debug("client %s: %s", format_address(self.client_address), ended)

    def handle_one_request(self):
        self.rfile = CappedReader(self.rfile, MAX_HANDSHAKE_BYTES)
        try:
            return super().handle_one_request()
        finally:
            self._uncap()

    def read_request(self, raw_requestline):
        self._check_method(raw_requestline)
        try:
            result = super().read_request(raw_requestline)
        except OSError as error:  # not a bad request: the connection broke or was shut down
            raise HandshakeAborted(str(error)) from None
        if self.rfile.ended:
            # http.client took what came before the end as the whole header section.
            raise HandshakeAborted("connection ended inside the request headers")
        check_header_section(self.headers)
        # The headers are in: a body or WebSocket frames are read without the cap.
        self._uncap()
        return result

    @staticmethod
    def _check_method(raw_requestline):
        # gevent takes any word for the method, and the method is logged and
        # handed to the application: only a token gets that far.
        method = raw_requestline.split(None, 1)[:1]  # gevent's first word
        if method and not is_token(method[0]):
            raise ValueError("method %r is not an HTTP token" % method[0][:50])

    def _uncap(self):
        if isinstance(self.rfile, CappedReader):
            self.rfile = self.rfile.stream

    def answer_bad_request(self, error):
        # gevent prints a traceback for some client errors (too many headers);
        # a client's mistake is worth one line.
        log.info("bad request from %s: %s", format_address(self.client_address),
                 str(error) or type(error).__name__)
        if isinstance(error, HandshakeTooLarge):
            return "431", _HEADERS_TOO_LARGE_RESPONSE
        return "400", BAD_REQUEST_RESPONSE

    def run_application(self):
        self.environ["greenbridge.local_address"] = self.socket.getsockname()[:2]
        # The pyOpenSSL connection on a wss:// listener (see tls/greensocket.py).
        self.environ["greenbridge.tls"] = getattr(self.socket, "tls", None)
        if wants_websocket(self.environ):
            # Checked and admitted within the budget; PendingUpgrade.accept ends it.
            self.environ["greenbridge.upgrade"] = PendingUpgrade(self)
        elif getattr(self.server, "port_shared", False):
            self.handshakes.pause()
            try:
                self.run_plain_application()
            finally:
                self.handshakes.resume()
            return
        self.run_plain_application()

    def log_request(self):
        # Upgrades get one access line when they end; rejections are logged by the app.
        pass
