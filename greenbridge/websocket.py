"""The client's WebSocket after the upgrade: the gevent loop around the protocol core.

protocol.py's ``ServerProtocol`` does the protocol (frames, fragments, control
frames, UTF-8, the close handshake, the limits); ``BridgeWebSocket`` moves
bytes for it and keeps what needs a socket or a clock:

- receiving: one receive usually brings whole frames; a payload larger than
  what came is received straight into its buffer (no copy, memory taken as it
  arrives), on plain sockets through sockets.FastIO, on TLS through the TLS
  socket's recv_into;
- sending: each frame in one send (a large payload after its header, not
  copied), under one lock, so frames from two greenlets (pongs, data,
  heartbeat pings) never interleave; a close frame is given 5 seconds, and is
  not sent after a frame that was cut. The core makes the pongs and close
  frames (``data_to_send``); the pumps' frames are encoded here, as the
  core's ``send_data`` would, without its queue: two calls and a list less
  per message (``send_frame`` costs what it did before the core). Nothing is
  sent after the close frame: the connection is closed in the same step as
  the core;
- ``message_timeout``: a fragmented message must end within it (else 1008);
- the client's TCP state (``client_connected``), the end of its stream (1006),
  the time of its last receive (for heartbeats);
- how the connection ended (``ending``, see endings.py): what the client did,
  recorded when it happens, else the ending ``close`` was given. The first
  one recorded stays.

It subclasses gevent-websocket's WebSocket, which the WSGI environ and its
handler expect (``handler.py`` makes and adopts it).
"""

import logging
import time
from socket import IPPROTO_TCP, TCP_INFO

from gevent import Timeout
from gevent.lock import Semaphore
from geventwebsocket.exceptions import WebSocketError

from greenbridge import endings
from greenbridge.adapters.gevent_websocket import WebSocket
from greenbridge.frames import encode_header
from greenbridge.protocol import COPY_LIMIT, RECEIVE_SIZE, ServerProtocol
from greenbridge.sockets import fast_io, send_all

log = logging.getLogger("greenbridge.websocket")

# A client that stops reading must not hold teardown for ever.
_CLOSE_FRAME_SEND_TIMEOUT = 5.0
# tcp_info.tcpi_state (the first byte) of a connection both sides still hold open.
_TCP_ESTABLISHED = 1


class BridgeWebSocket(WebSocket):
    """A server-side WebSocket that reads whole messages as bytes, fast and bounded."""

    __slots__ = ("message_timeout", "_core", "_send_lock", "_frame_half_sent", "_ending",
                 "_socket", "_io", "_receive", "_receive_into", "last_received")

    def __init__(self, environ, stream, handler, max_payload_size, message_timeout):
        super().__init__(environ, stream, handler)
        # Seconds a fragmented message may stay open (0: no limit).
        self.message_timeout = message_timeout
        self._core = ServerProtocol(max_payload_size)
        self._socket = handler.socket
        # Frames are received straight from the socket: a receive that waits
        # holds no buffer (the handler's buffered reader would hold one per
        # idle connection). What that reader holds already came right behind
        # the upgrade request: it is the start of the frames.
        self._core.receive_data(_take_buffered(handler.rfile, self._socket))
        self._io = fast_io(self._socket)
        self._receive = self._io.recv
        self._receive_into = self._io.recv_into
        self._send_lock = Semaphore()
        # True while a frame is being sent, and for good once a send was cut.
        self._frame_half_sent = False
        # How the connection ended (an Ending), once it did; ``closed`` is True from then on.
        self._ending = None
        # When the client last sent a frame of any kind (heartbeats ping after a quiet spell).
        self.last_received = time.monotonic()

    def __del__(self):
        # The stock class sends a close frame from the garbage collector.
        pass

    # -- reading ---------------------------------------------------------

    def receive_message(self):
        """Return (opcode, payload bytes) for the next data message, or None when it ended.

        Protocol errors close the connection with the right code before
        returning None; ``ending`` tells what happened.
        """
        if self.closed:
            return None
        core = self._core
        timer = None
        try:
            events = core.events_received()
            while not events:
                if core.writes:  # pongs
                    self._send_replies(core.data_to_send())
                if timer is None and self.message_timeout and core.message_in_progress:
                    timer = Timeout.start_new(self.message_timeout)
                target = core.receive_buffer()
                if target is None:
                    data = self._receive(RECEIVE_SIZE)
                    if not data:
                        raise WebSocketError("connection ended")
                    # A frame starts here (a payload's receives below do not count: a pong does).
                    self.last_received = time.monotonic()
                    core.receive_data(data)
                else:  # the rest of a payload, received in place
                    received = self._receive_into(target)
                    if not received:
                        raise WebSocketError("connection ended inside a frame")
                    core.received_into(received)
                events = core.events_received()
            event = events[0]  # the core gives one at a time
            if type(event) is not tuple:
                return self._ended_by(event, core.data_to_send())
            if core.writes:  # pongs
                self._send_replies(core.data_to_send())
            return event
        except Timeout as fired:
            if fired is not timer:
                raise
            too_slow = endings.message_too_slow(self.message_timeout)
            core.fail(too_slow.code, too_slow.reason)
            return self._ended_by(core.events_received()[0], core.data_to_send())
        except (OSError, WebSocketError):
            # The client vanished without a close frame.
            self.mark_disconnected()
            return None
        finally:
            if timer is not None:
                timer.close()

    def _send_replies(self, writes):
        """Pongs, sent as the core made them (while the connection is open)."""
        if self.closed:
            raise WebSocketError("connection is closed")
        self._send(writes)

    def _ended_by(self, event, writes):
        """The client closed (CloseReceived) or broke the protocol: send the core's close frame."""
        self._end(writes, endings.from_client(event))
        return None

    # -- writing ---------------------------------------------------------

    def send_frame(self, payload, opcode):
        """Send one message (or a ping) in one frame; WebSocketError once the connection closed."""
        if self.closed:
            raise WebSocketError("connection is closed")
        header = encode_header(opcode, len(payload))
        with self._send_lock:
            self._frame_half_sent = True
            if len(payload) <= COPY_LIMIT:
                send_all(self._io, header + payload)
            else:  # the payload itself, not a copy, after its header
                send_all(self._io, header)
                send_all(self._io, payload)
            self._frame_half_sent = False

    def send_frames(self, data):
        """Send whole frames encoded elsewhere (a publication's, built once for all its
        subscribers) as they are; WebSocketError once the connection closed."""
        if self.closed:
            raise WebSocketError("connection is closed")
        self._send((data,))

    def send_frames_now(self, data):
        """Start sending whole frames without waiting; the number of bytes that went.

        0 when nothing could go at once (another greenlet is sending, the
        socket is full, or it is a TLS socket). When only a part went, the send
        lock stays held and the rest must follow through ``send_rest``.
        """
        if self.closed:
            raise WebSocketError("connection is closed")
        send_now = getattr(self._io, "send_now", None)  # a plain socket's FastIO
        if send_now is None or self._send_lock.locked():
            return 0
        sent = send_now(data)
        if 0 < sent < len(data):
            self._send_lock.acquire(blocking=False)  # free: checked above, nothing ran since
            self._frame_half_sent = True
        return sent

    def send_rest(self, data):
        """The rest of frames that ``send_frames_now`` started, under the lock it kept."""
        try:
            send_all(self._io, data)
            self._frame_half_sent = False
        finally:
            self._send_lock.release()

    def _send(self, writes):
        with self._send_lock:
            self._frame_half_sent = True
            for data in writes:
                send_all(self._io, data)
            self._frame_half_sent = False

    def close(self, ending):
        """End with `ending` (an Ending) unless the connection ended already: send its
        close frame, if the stream still allows it."""
        if self.closed:
            return  # what ended it came first
        core = self._core
        core.send_close(ending.code, ending.reason)
        self._end(core.data_to_send(), ending)

    def _end(self, writes, ending):
        """Record how the connection ends, then send the close frame in `writes`, if it can go."""
        # Recorded first: a greenlet that sends meanwhile finds the connection closed.
        self._record(ending)
        if not writes or self._frame_half_sent:
            return  # a close frame already went, or would follow a frame being sent or cut
        try:
            with Timeout(_CLOSE_FRAME_SEND_TIMEOUT):
                self._send(writes)
        except (OSError, WebSocketError, Timeout):
            log.debug("could not send close frame %d", ending.code)

    @property
    def ending(self):
        """How the connection ended (an Ending), or None while it is open."""
        return self._ending

    @property
    def close_received(self):
        """The client's close frame as it came (a protocol.Close), or None."""
        return self._core.close_received

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
        """The client left without a close frame (found by whoever waited for it)."""
        self._record(endings.CLIENT_LEFT)

    def _record(self, ending):
        self._ending = endings.first(self._ending, ending)
        self.closed = True


def _take_buffered(reader, sock):
    """The bytes `reader` (the socket's buffered reader) holds, without waiting for more.

    The reader is closed, which frees its buffer; the socket stays open.
    """
    timeout = sock.gettimeout()
    sock.settimeout(0.0)  # an empty buffer then costs one receive that does not wait
    try:
        buffered = reader.read1(RECEIVE_SIZE) or b""
    except OSError:
        buffered = b""
    finally:
        sock.settimeout(timeout)
    reader.close()
    return buffered
