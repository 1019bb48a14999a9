#!/usr/bin/env python3
"""The WebSocket protocol work per message, without sockets: greenbridge against websockets.

    .venv/bin/python scripts/bench_core.py [--rounds 7] [--only text-20,batch-50] [--memory]

Answers one question of issue 16 (item 2): can python-websockets' sans-I/O
core (``websockets.protocol``) parse the client's frames and build the
server's at today's per-message speed, or does greenbridge keep its own?

Every variant reads the same bytes from the same in-memory "socket" (a
receive returns at most one 64 KiB segment, copied out as the kernel would)
and must return the same messages:

- ``today``: greenbridge's BridgeWebSocket.receive_message (websocket.py
  around protocol.py, as they run in the server, the socket swapped for the
  fake); before protocol.py was wired in, websocket.py parsed frames itself;
- ``ws-raw``: websockets' ServerProtocol.receive_data + events_received only
  (frames, not messages: no assembly, no UTF-8 check: NOT what the bridge needs);
- ``ws``: the same plus what the bridge must add on top: fragments joined,
  text checked as UTF-8 (websockets' Protocol leaves both to its caller);
- ``ws-fast``: a thin fast path in front of ``ws``: complete, final, masked
  data frames parsed with frames.py, everything else handed to websockets;
- ``core``: greenbridge/protocol.py, the I/O-free core, alone.

Rounds interleave the variants (the order rotates each round); the table
shows the median microseconds per message over the rounds and its ratio to
``today``. ``--memory`` runs one 16 MiB message per variant in a fresh
process and prints the peak memory it took beyond the bytes on the wire.
The machine may be shared: compare ratios, not absolute figures.
"""

import argparse
import os
import statistics
import struct
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from websockets.frames import BINARY, CLOSE, CONT, TEXT  # noqa: E402
from websockets.protocol import OPEN, State  # noqa: E402
from websockets.server import ServerProtocol  # noqa: E402

from gevent.lock import Semaphore  # noqa: E402

from greenbridge import protocol as core_protocol  # noqa: E402
from greenbridge.frames import TextChecker, check_text, encode_header, unmask  # noqa: E402
from greenbridge.websocket import BridgeWebSocket  # noqa: E402

KIB, MIB = 1024, 1024 * 1024
MAX_PAYLOAD_SIZE = 16 * MIB  # greenbridge's default --max-payload-size
SEGMENT = 64 * KIB  # what one receive brings at most (greenbridge asks for 64 KiB)
COPY_LIMIT = core_protocol.COPY_LIMIT  # above it header and payload go out apart
_KEY = b"\x37\xfa\x21\x3d"


def parse_header(data, offset=0):
    """(fin, opcode, rsv, length, mask, header size) of a frame, or None while it is cut.

    ValueError for the control frames websockets must refuse (the fast path leaves them to it).
    """
    if len(data) - offset < 2:
        return None
    first, second = data[offset], data[offset + 1]
    length, masked = second & 0x7F, second & 0x80
    size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if masked else 0)
    if len(data) - offset < size:
        return None
    if length == 126:
        length = struct.unpack_from("!H", data, offset + 2)[0]
    elif length == 127:
        length = struct.unpack_from("!Q", data, offset + 2)[0]
    opcode = first & 0x0F
    if opcode >= 0x8 and (not first & 0x80 or length > 125):
        raise ValueError("bad control frame")
    mask = data[offset + size - 4:offset + size] if masked else None
    return bool(first & 0x80), opcode, first & 0x70, length, mask, size


def client_frame(opcode, payload, fin=True):
    """A masked client frame (the same encoder as the tests' support.frame)."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    return header + _KEY + unmask(payload, _KEY)


# -- the fake socket --------------------------------------------------------

class Wire:
    """Replays `data` for ever, at most SEGMENT bytes per receive (copied, as from a kernel)."""

    def __init__(self, data):
        self.data = data
        self.view = memoryview(data)
        self.position = 0

    def _take(self, wanted):
        if self.position == len(self.data):
            self.position = 0
        start = self.position
        self.position = min(start + wanted, start + SEGMENT, len(self.data))
        return start, self.position

    def recv(self, size):
        start, end = self._take(size)
        return self.data[start:end]

    def recv_into(self, buffer):
        start, end = self._take(len(buffer))
        buffer[:end - start] = self.view[start:end]
        return end - start

    def send(self, data):
        return len(data)


# -- the variants: each makes a receive_message() for a wire -------------------

def today_reader(wire):
    """BridgeWebSocket's reading code as it runs, on the fake socket."""
    websocket = BridgeWebSocket.__new__(BridgeWebSocket)
    websocket.closed = False
    websocket.message_timeout = 0  # a gevent timer per fragmented message; see the report
    websocket._core = core_protocol.ServerProtocol(MAX_PAYLOAD_SIZE)
    websocket._io = wire
    websocket._receive, websocket._receive_into = wire.recv, wire.recv_into
    websocket._send_lock = Semaphore()
    websocket._frame_half_sent = False
    websocket._ending = None
    websocket.last_received = 0.0
    return websocket.receive_message


class WebsocketsReader:
    """websockets' ServerProtocol fed by receives; `complete` adds what the bridge needs."""

    def __init__(self, wire, complete=True):
        self.wire = wire
        self.complete = complete
        self.protocol = ServerProtocol(state=State.OPEN, max_size=MAX_PAYLOAD_SIZE)
        self.frames = []
        self.next_frame = 0
        self.fragments = None
        self.text = None

    def feed(self, data):
        protocol = self.protocol
        protocol.receive_data(data)
        for _ in protocol.data_to_send():  # pongs, close frames
            pass
        self.frames = protocol.events_received()
        self.next_frame = 0

    def receive_message(self):
        while True:
            while self.next_frame < len(self.frames):
                frame = self.frames[self.next_frame]
                self.next_frame += 1
                message = self._message(frame) if self.complete else (frame.opcode, frame.data)
                if message is not None:
                    return message
            if self.protocol.state is not OPEN:
                return None
            self.feed(self.wire.recv(SEGMENT))

    def _message(self, frame):
        opcode = frame.opcode
        if opcode is TEXT or opcode is BINARY:
            if frame.fin:
                if opcode is TEXT:
                    check_text(frame.data)
                return opcode, frame.data
            self.fragments = [frame.data]
            self.text = TextChecker() if opcode is TEXT else None
            self.first_opcode = opcode
            if self.text is not None:
                self.text.feed(frame.data, False)
            return None
        if opcode is CONT:
            self.fragments.append(frame.data)
            if self.text is not None:
                self.text.feed(frame.data, frame.fin)
            if frame.fin:
                payload, self.fragments = b"".join(self.fragments), None
                return self.first_opcode, payload
            return None
        if opcode is CLOSE:
            return None
        return None  # ping (answered by the protocol), pong


class FastPathReader(WebsocketsReader):
    """Complete, final, masked data frames parsed with frames.py; the rest goes to websockets.

    Only at a frame boundary with nothing buffered in websockets (its
    reader.buffer and current_size are private: a real version would need an adapter).
    """

    def feed(self, data):
        protocol = self.protocol
        if protocol.reader.buffer or protocol.current_size is not None \
                or protocol.state is not OPEN:
            return super().feed(data)
        messages = []
        offset, end = 0, len(data)
        while offset < end:
            try:
                header = parse_header(data, offset)
            except ValueError:  # a bad control frame: websockets says which close code
                break
            if header is None:
                break
            fin, opcode, rsv, length, mask, size = header
            if not fin or rsv or mask is None or opcode not in (1, 2) \
                    or length > MAX_PAYLOAD_SIZE or end - offset - size < length:
                break
            start = offset + size
            offset = start + length
            payload = unmask(data[start:offset], mask)
            if opcode == 1:
                check_text(payload)
            messages.append((opcode, payload))
        if offset < end:
            super().feed(data[offset:])
            rest = [self._message(frame) for frame in self.frames]
            messages += [message for message in rest if message is not None]
        self.frames = messages
        self.next_frame = 0

    def _message(self, frame):
        if type(frame) is tuple:
            return frame
        return super()._message(frame)


class CoreReader:
    """protocol.py alone, fed as websocket.py feeds it (large payloads received in place)."""

    def __init__(self, wire):
        self.wire = wire
        self.protocol = core_protocol.ServerProtocol(MAX_PAYLOAD_SIZE)

    def receive_message(self):
        protocol = self.protocol
        while True:
            events = protocol.events_received()  # one at a time
            for _ in protocol.data_to_send():  # pongs, close frames
                pass
            if events:
                event = events[0]
                return event if type(event) is tuple else None  # None: a close
            target = protocol.receive_buffer()
            if target is None:
                protocol.receive_data(self.wire.recv(SEGMENT))
            else:
                protocol.received_into(self.wire.recv_into(target))


READERS = {
    "today": today_reader,
    "ws-raw": lambda wire: WebsocketsReader(wire, complete=False).receive_message,
    "ws": lambda wire: WebsocketsReader(wire).receive_message,
    "ws-fast": lambda wire: FastPathReader(wire).receive_message,
    "core": lambda wire: CoreReader(wire).receive_message,
}


# -- sending: one server frame's bytes ----------------------------------------

def encode_sender():
    """What websocket.py's send_frame does: frames.encode_header, without the core's queue."""
    def frame_bytes(opcode, payload):
        header = encode_header(opcode, len(payload))
        return header + payload if len(payload) <= COPY_LIMIT else (header, payload)
    return frame_bytes


def websockets_sender():
    protocol = ServerProtocol(state=State.OPEN, max_size=MAX_PAYLOAD_SIZE)

    def frame_bytes(opcode, payload):
        (protocol.send_text if opcode == 1 else protocol.send_binary)(payload)
        return protocol.data_to_send()
    return frame_bytes


def core_sender():
    protocol = core_protocol.ServerProtocol(MAX_PAYLOAD_SIZE)

    def frame_bytes(opcode, payload):
        protocol.send_data(opcode, payload)  # how the core makes its own frames
        return protocol.data_to_send()
    return frame_bytes


SENDERS = {"today": encode_sender, "ws": websockets_sender, "core": core_sender}


# -- the cases ------------------------------------------------------------------

def _text(size):
    return (b"caf\xc3\xa9 " * size)[:size]  # valid UTF-8 (cut between characters below)


# name: (bytes on the wire, messages they hold, expected first message or None, blocks timed).
# Built when first used: the 16 MiB ones are large.
RECEIVE_CASES = {
    "text-20": lambda: (client_frame(1, _text(20)), 1, (1, _text(20)), 4000),
    "binary-1k": lambda: (client_frame(2, os.urandom(KIB)), 1, None, 3000),
    "binary-64k": lambda: (client_frame(2, os.urandom(64 * KIB)), 1, None, 300),
    "binary-16m": lambda: (client_frame(2, os.urandom(16 * MIB)), 1, None, 3),
    "text-3-fragments": lambda: (
        client_frame(1, _text(342), fin=False) + client_frame(0, _text(342), fin=False)
        + client_frame(0, _text(342)), 1, (1, _text(342) * 3), 2000),
    "batch-50": lambda: (b"".join(client_frame(1, _text(20)) for _ in range(50)), 50,
                         (1, _text(20)), 100),
}

# name: (opcode, payload, frames timed)
SEND_CASES = {
    "send-text-20": lambda: (1, _text(20), 20000),
    "send-binary-1k": lambda: (2, os.urandom(KIB), 20000),
    "send-binary-64k": lambda: (2, os.urandom(64 * KIB), 2000),
    "send-binary-16m": lambda: (2, os.urandom(16 * MIB), 10),
}


def _expected(data, expected):
    if expected is not None:
        return expected
    _, _, _, _, mask, size = parse_header(data)
    return 2, unmask(data[size:], mask)


def check_readers(case, built):
    """Every variant returns the same first message (ws-raw: the first frame's payload)."""
    data, _, expected, _ = built
    expected = _expected(data, expected)
    for name, make in READERS.items():
        got = make(Wire(data))()
        if name == "ws-raw" and case == "text-3-fragments":
            continue  # frames, not messages
        if (int(got[0]), bytes(got[1])) != expected:
            raise AssertionError("%s: wrong message for %s" % (name, case))


def time_receive(name, built):
    data, per_block, _, blocks = built
    receive_message = READERS[name](Wire(data))
    receive_message()  # warm: a large payload's buffer exists from then on
    for _ in range(per_block - 1):
        receive_message()
    started = time.thread_time()
    for _ in range(blocks * per_block):
        receive_message()
    return (time.thread_time() - started) / (blocks * per_block) * 1e6


def time_send(name, built):
    opcode, payload, count = built
    frame_bytes = SENDERS[name]()
    frame_bytes(opcode, payload)
    started = time.thread_time()
    for _ in range(count):
        frame_bytes(opcode, payload)
    return (time.thread_time() - started) / count * 1e6


def run(cases, rounds):
    """{case: {variant: [µs per message, one per round]}}, variants interleaved."""
    results = {}
    for case in cases:
        receiving = case in RECEIVE_CASES
        variants = list(READERS if receiving else SENDERS)
        built = (RECEIVE_CASES if receiving else SEND_CASES)[case]()
        if receiving:
            check_readers(case, built)
        timings = {name: [] for name in variants}
        for round_number in range(rounds):
            turn = round_number % len(variants)
            for name in variants[turn:] + variants[:turn]:
                timings[name].append((time_receive if receiving else time_send)(name, built))
        results[case] = timings
    return results


def print_table(results):
    variants = []
    for timings in results.values():
        variants += [name for name in timings if name not in variants]
    print("µs per message: median x ratio to today [min-max of %d rounds]"
          % len(next(iter(next(iter(results.values())).values()))))
    print("%-17s" % "case" + "".join("%26s" % name for name in variants))
    for case, timings in results.items():
        base = statistics.median(timings["today"])
        cells = []
        for name in variants:
            if name not in timings:
                cells.append("%26s" % "-")
                continue
            median = statistics.median(timings[name])
            figure = "%.3g" % median if median < 100 else "%.0f" % median
            spread = "%.3g-%.3g" % (min(timings[name]), max(timings[name]))
            cells.append("%26s" % ("%s x%.2f [%s]" % (figure, median / base, spread)))
        print("%-17s" % case + "".join(cells))


# -- memory for one 16 MiB message ------------------------------------------------

def _memory_status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])  # KiB


def memory_child(name):
    """Peak memory (MiB) one 16 MiB message takes beyond the wire's bytes, in a fresh process.

    The peak (VmHWM) is reset first (Linux 4.0+), so building the wire does not count.
    """
    data = RECEIVE_CASES["binary-16m"]()[0]
    receive_message = READERS[name](Wire(data))
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before, _ = _memory_status()
    message = receive_message()
    after, peak = _memory_status()
    assert len(message[1]) == 16 * MIB
    print("%.1f %.1f" % ((peak - before) / 1024.0, (after - before) / 1024.0))


def memory_table():
    print("\nmemory for one 16 MiB message beyond the wire's bytes (the message itself is 16 MiB):")
    print("  %-8s %8s %8s" % ("", "peak", "after"))
    for name in READERS:
        output = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", name],
                                check=True, capture_output=True, text=True).stdout
        peak, after = output.split()
        print("  %-8s %6s MiB %6s MiB" % (name, peak, after))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", help="comma-separated cases (default: all): "
                        + ", ".join(list(RECEIVE_CASES) + list(SEND_CASES)))
    parser.add_argument("--memory", action="store_true", help="also the 16 MiB memory table")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.memory_child:
        memory_child(options.memory_child)
        return
    cases = options.only.split(",") if options.only else list(RECEIVE_CASES) + list(SEND_CASES)
    print_table(run(cases, options.rounds))
    if options.memory:
        memory_table()


if __name__ == "__main__":
    main()
