"""How a connection ends (endings.py): which Ending results from what happened, in which order.

The pure part is fed what happened; the client's WebSocket (websocket.py) is
a real one on a loopback TCP connection, fed hand-written frames, and the
teardown's part is played by calling its ``close`` with what the connection
would have decided. Expected codes are RFC 6455's and the README's (section
"What clients see"), written out by hand.
"""

import functools
import struct
import types

import gevent
import pytest
from gevent import socket

from greenbridge import endings, modes
from greenbridge.adapters.gevent_websocket import Stream
from greenbridge.endings import By, Ending
from greenbridge.protocol import ServerProtocol
from greenbridge.websocket import BridgeWebSocket
from support import frame

MIB = 1024 * 1024
TEXT, CONTINUATION, CLOSE = 0x1, 0x0, 0x8
# The server's reply to a client's close 1000 (RFC 6455 5.5.1: its code, no reason).
CLOSE_1000 = b"\x88\x02\x03\xe8"
SHUTDOWN_CLOSE = b"\x88\x16\x03\xe9server shutting down"  # 0x16 = 2 + 20 bytes


def ending_of(*happened):
    """The ending after these happened, in this order."""
    return functools.reduce(endings.first, happened, None)


# -- what happened -> its Ending -------------------------------------------------

@pytest.mark.parametrize("payload, expected", [
    (b"\x03\xe8", Ending(1000, "client closed", By.CLIENT)),  # the README's access line
    (b"\x0f\xa1done here", Ending(4001, "done here", By.CLIENT)),
    (b"", Ending(1005, "client closed", By.CLIENT)),  # a close frame without a code
])
def test_the_clients_close_frame_is_its_ending(payload, expected):
    core = ServerProtocol(MIB)
    core.receive_data(frame(CLOSE, payload))
    assert endings.from_client(core.events_received()[0]) == expected


@pytest.mark.parametrize("data, code", [
    (frame(TEXT, b"hello", mask=False), 1002),  # an unmasked client frame
    (frame(TEXT, b"\xff"), 1007),  # invalid UTF-8 in a text message
    (frame(TEXT, b"x" * 1025), 1009),  # over the size limit (1 KiB here)
])
def test_a_protocol_error_is_ended_by_the_server_with_its_code(data, code):
    core = ServerProtocol(1024)
    core.receive_data(data)
    ending = endings.from_client(core.events_received()[0])
    assert (ending.code, ending.by) == (code, By.SERVER)


@pytest.mark.parametrize("mode, written, expected", [
    ("framed", b"\x08\x00\x00\x00\x05\x0f\xa0bye", Ending(4000, "bye", By.PHP)),
    ("framed", b"\x08\x00\x00\x00\x00", Ending(1005, "", By.PHP)),  # no code: an empty close
    ("framed", b"\x07\x00\x00\x00\x00", Ending(1011, "PHP protocol error", By.PHP)),
    ("line", b"x" * 1025, Ending(1009, "message from PHP too big", By.PHP)),
])
def test_what_php_writes_can_end_the_connection(mode, written, expected):
    events = modes.decoder(mode, 1024).feed(written)
    assert endings.from_php(events[-1]) == expected


def test_php_ending_inside_a_line_is_a_protocol_error():
    decoder = modes.decoder("line", 1024)
    assert decoder.feed(b"half a line") == []
    assert endings.from_php(decoder.end()[-1]) == Ending(1011, "PHP protocol error", By.PHP)


def test_php_closing_its_socket_is_1000_or_1011_naming_the_status():
    assert endings.php_ended() == Ending(1000, "PHP closed the connection", By.PHP)
    assert endings.php_ended("exit status 3") == Ending(1011, "PHP exit status 3", By.PHP)
    assert endings.PHP_NOT_CONNECTED.code == 1011


def test_timeouts_and_the_shutdown_are_1001_naming_the_cause():
    assert endings.php_timeout(2) == Ending(1001, "PHP timeout (2s) reached", By.SERVER)
    assert endings.idle_timeout(0.5) == Ending(1001, "connection timeout (0.5s idle) reached",
                                               By.SERVER)
    assert endings.no_pong(30) == Ending(1001, "no pong within 30s", By.SERVER)
    assert endings.SHUTDOWN == Ending(1001, "server shutting down", By.SHUTDOWN)


def test_a_client_that_leaves_gets_1006_which_is_never_sent():
    assert endings.CLIENT_LEFT == Ending(1006, "client disconnected without close frame",
                                         By.CLIENT)
    assert endings.CLIENT_UNREACHABLE == Ending(1006, "client disconnected", By.CLIENT)


# -- the first cause wins --------------------------------------------------------

def test_nothing_happened_is_no_ending():
    assert ending_of() is None


def test_the_first_cause_wins():
    bye = endings.client_closed(1000, "bye")
    assert ending_of(bye, endings.php_ended(), endings.SHUTDOWN) == bye
    assert ending_of(endings.SHUTDOWN, bye) == endings.SHUTDOWN
    assert ending_of(endings.php_timeout(2), endings.CLIENT_LEFT) == endings.php_timeout(2)


# -- the client's WebSocket: what the client did, then the teardown ---------------

@pytest.fixture
def pair():
    """(server-side BridgeWebSocket, the client's socket), over loopback TCP."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server_side, _ = listener.accept()
    listener.close()
    handler = types.SimpleNamespace(socket=server_side, rfile=server_side.makefile("rb"))
    websocket = BridgeWebSocket({}, Stream(handler), handler, MIB, message_timeout=0)
    client.settimeout(5)
    yield websocket, client
    client.close()
    server_side.close()


def received(client, size):
    """`size` bytes from the server (within the client's 5 s timeout)."""
    data = b""
    while len(data) < size:
        more = client.recv(size - len(data))
        assert more, "the server closed after %r" % data
        data += more
    return data


def nothing_more(client):
    """True when the server sent nothing more (while the connection stays open)."""
    client.setblocking(False)
    try:
        client.recv(1)
    except BlockingIOError:
        return True
    finally:
        client.settimeout(5)
    return False


def test_a_client_close_after_php_exited_is_the_ending(pair):
    # PHP closed its socket; while the connection waits for its exit status
    # (up to --php-kill-grace), the client's close frame comes in.
    websocket, client = pair
    client.sendall(frame(CLOSE, b"\x03\xe8bye"))
    assert websocket.receive_message() is None
    assert received(client, 4) == CLOSE_1000
    websocket.close(endings.php_ended())  # the teardown, with what the connection decided
    assert websocket.ending == Ending(1000, "bye", By.CLIENT)
    assert websocket.close_received.reason == "bye"  # what PHP is told (framed mode)
    assert nothing_more(client)  # one close frame: the handshake is done


def test_a_shutdown_while_a_fragmented_message_is_open_closes_with_1001(pair):
    websocket, client = pair
    client.sendall(frame(TEXT, b"first half", fin=False))
    reader = gevent.spawn(websocket.receive_message)  # the client pump, waiting for the rest
    with gevent.Timeout(5):
        while not websocket._core.message_in_progress:  # it has read the first half
            gevent.sleep(0.01)
    reader.kill()  # the teardown stops the pumps first
    websocket.close(endings.SHUTDOWN)
    assert received(client, len(SHUTDOWN_CLOSE)) == SHUTDOWN_CLOSE
    assert websocket.ending == endings.SHUTDOWN
    client.sendall(frame(CONTINUATION, b"second half") + frame(CLOSE, b"\x03\xe9"))
    assert websocket.receive_message() is None  # nothing counts after the close
    assert websocket.ending == endings.SHUTDOWN


def test_a_protocol_error_stays_the_ending_whatever_the_teardown_decides(pair):
    websocket, client = pair
    client.sendall(frame(TEXT, b"\xff"))
    assert websocket.receive_message() is None
    reason = b"invalid UTF-8 in text message"
    assert received(client, 4 + len(reason)) == \
        bytes([0x88, 2 + len(reason)]) + struct.pack("!H", 1007) + reason
    websocket.close(endings.CLIENT_UNREACHABLE)  # a pump's send failed meanwhile
    assert websocket.ending == Ending(1007, reason.decode(), By.SERVER)
    assert nothing_more(client)


def test_a_client_that_left_gets_no_close_frame(pair):
    websocket, client = pair
    client.shutdown(socket.SHUT_WR)  # gone without a close frame (it could still read one)
    assert websocket.receive_message() is None
    websocket.close(endings.PHP_NOT_CONNECTED)
    assert websocket.ending == endings.CLIENT_LEFT
    assert websocket.close_received is None
    assert nothing_more(client)


def test_the_teardowns_ending_goes_out_when_nothing_came_first(pair):
    websocket, client = pair
    websocket.close(endings.php_timeout(2))
    expected = b"PHP timeout (2s) reached"
    assert received(client, 4 + len(expected)) == \
        bytes([0x88, 2 + len(expected)]) + struct.pack("!H", 1001) + expected
    assert websocket.ending == endings.php_timeout(2)
    websocket.close(endings.SHUTDOWN)  # a second close sends nothing and changes nothing
    websocket.mark_disconnected()  # nor does learning later that the client has gone
    assert websocket.ending == endings.php_timeout(2)
    assert nothing_more(client)
