"""Property-based fuzzing of what strangers can send: the HTTP upgrade, frames, the ID line.

Random and mutated inputs must never raise out of the parsers, never pair a
wrong connection ID, and never stop the server from serving.
"""

import socket
import struct
import uuid

import gevent
import pytest
from gevent import socket as gsocket
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import read_until_closed
from greenbridge.backconnect import BackConnectListener
from greenbridge.metrics import Metrics
from greenbridge.server import listen_tcp
from greenbridge.websocket import Rejected, check_upgrade_request, valid_close_code
from test_bridge import upgrade_request
from test_frames import RawClient, frame

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

VALID_REQUEST = upgrade_request("/fuzz?a=1", extra=b"Origin: http://example.test\r\n")


@st.composite
def mutated(draw, original):
    """`original` with a few bytes replaced, inserted, deleted, or cut short."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        operation = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if operation == "replace" and data:
            data[position] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=40))
        elif operation == "delete" and data:
            del data[position:position + draw(st.integers(1, 20))]
        elif operation == "truncate":
            del data[position:]
    return bytes(data)


header_line = st.tuples(
    st.binary(min_size=0, max_size=30).filter(lambda name: b"\r\n" not in name),
    st.binary(min_size=0, max_size=200).filter(lambda value: b"\r\n" not in value),
).map(lambda pair: pair[0] + b": " + pair[1] + b"\r\n")

requests = st.one_of(
    mutated(VALID_REQUEST),
    st.lists(header_line, max_size=20).map(lambda lines: upgrade_request(extra=b"".join(lines))),
    st.binary(max_size=2000),
)


# -- the HTTP upgrade, against a running server -------------------------------------

@pytest.fixture(scope="module")
def fuzz_bridge(request):
    from conftest import SCENARIO_PHP, Bridge
    bridge = Bridge(["-H", "127.0.0.1", "-P", "0", "-e", "php", "-s", SCENARIO_PHP,
                     "--handshake-timeout", "2", "--php-kill-grace", "0.2"])
    request.addfinalizer(bridge.kill)
    return bridge.wait_listening()


def send_request(port, data):
    """Send `data`, end our side, and return everything the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading it all
        return read_until_closed(sock)


ANSWERS = (b"HTTP/1.1 101 ", b"HTTP/1.1 400 ", b"HTTP/1.1 414 ", b"HTTP/1.1 426 ",
           b"HTTP/1.1 431 ", b"HTTP/1.0 400 ", b"HTTP/1.0 426 ")


@FUZZ
@given(data=requests)
@example(data=VALID_REQUEST)
@example(data=b"\r\n\r\n")
@example(data=b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n")
def test_random_upgrade_requests_get_an_http_answer_or_a_close(fuzz_bridge, data):
    answer = send_request(fuzz_bridge.port, data)
    assert answer == b"" or answer.startswith(ANSWERS), answer[:200]
    assert fuzz_bridge.process.poll() is None


client_frames = st.builds(
    frame,
    opcode=st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]) | st.integers(0, 15),
    payload=st.one_of(st.binary(max_size=200), st.text(max_size=30).map(str.encode),
                      st.sampled_from([b"\x03\xe8", b"\x03\xe8bye", b"\x03", b"\x03\xed",
                                       b"\x0f\xa0\xff"])),
    fin=st.just(True) | st.booleans(),
    mask=st.just(True) | st.booleans(),
    rsv=st.just(0) | st.sampled_from([0x10, 0x20, 0x40]),
)
frame_streams = st.one_of(
    st.lists(client_frames, max_size=6).map(b"".join),
    st.lists(client_frames, min_size=1, max_size=4).map(b"".join).flatmap(mutated),
    st.binary(max_size=300),
)


@settings(FUZZ, max_examples=150)
@given(data=frame_streams)
@example(data=frame(0x1, b"\xff") + frame(0x2, b"never read"))
@example(data=frame(0x8, b"\x03\xe8bye"))
@example(data=struct.pack("!BBQ", 0x82, 0xFF, 2 ** 63) + b"mask")
def test_random_frames_after_the_upgrade_get_echoes_and_a_valid_close(fuzz_bridge, data):
    client = RawClient(fuzz_bridge.port)
    client.sock.settimeout(30)  # the server must end the connection by itself
    try:
        client.sock.sendall(data)
        client.sock.shutdown(socket.SHUT_WR)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed first
    try:
        while True:
            opcode, payload = client.read_frame()
            # Raw mode: binary echoes and pongs for pings, then a close. (Whether
            # the frames are read at all depends on PHP connecting back before
            # the client's FIN arrives: a client gone by then is not read.)
            assert opcode in (0x2, 0xA, 0x8), opcode
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if payload else None
                assert code is None or valid_close_code(code), payload
    except (EOFError, ConnectionResetError):
        pass
    finally:
        client.sock.close()


def test_after_the_upgrade_fuzz_the_server_still_serves(fuzz_bridge):
    # Runs after the fuzz test above (pytest keeps file order).
    fuzz_bridge.assert_serves()
    log = fuzz_bridge.log
    assert "Traceback" not in log
    assert " failed with " not in log  # gevent's line for a greenlet that died


environ_values = st.one_of(st.none(), st.text(max_size=60),
                           st.sampled_from(["websocket", "Upgrade", "13", "GET",
                                            "dGhlIHNhbXBsZSBub25jZQ=="]))


@settings(max_examples=500, deadline=None, derandomize=True)
@given(upgrade=environ_values, connection=environ_values, version=environ_values,
       key=environ_values, method=environ_values,
       protocol=st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/0.9", ""]))
def test_upgrade_checks_only_accept_or_reject(upgrade, connection, version, key, method,
                                               protocol):
    environ = {name: value for name, value in [
        ("HTTP_UPGRADE", upgrade), ("HTTP_CONNECTION", connection),
        ("HTTP_SEC_WEBSOCKET_VERSION", version), ("HTTP_SEC_WEBSOCKET_KEY", key),
        ("REQUEST_METHOD", method)] if value is not None}
    try:
        check_upgrade_request(environ, protocol)
    except Rejected as rejection:
        assert rejection.status[:3] in ("400", "426")
        return
    # Accepted: then it really is a well-formed upgrade.
    assert environ["REQUEST_METHOD"] == "GET" and protocol == "HTTP/1.1"
    assert environ["HTTP_SEC_WEBSOCKET_VERSION"].strip() == "13"


# -- the back-connection ID line, against a listener in this process ---------------------

@pytest.fixture(scope="module")
def listener():
    backconnect = BackConnectListener(listen_tcp("127.0.0.1", 0), 65536, 64, Metrics())
    backconnect.start()
    yield backconnect
    backconnect.close()


def offer(listener, data):
    """Connect to the listener as PHP would, send `data`, and return what got paired."""
    expected_id = str(uuid.uuid4())
    pending = listener.expect(expected_id)
    sock = gsocket.create_connection(listener.address, timeout=10)
    try:
        sock.sendall(data.replace(b"{ID}", expected_id.encode()))
        sock.shutdown(socket.SHUT_WR)
        # The listener either pairs the socket or closes it (EOF here).
        closed = gevent.spawn(sock.recv, 1)
        gevent.wait([pending, closed], count=1, timeout=10)
        closed.kill()
        assert pending.ready() or closed.ready(), "neither paired nor refused in 10s"
        return expected_id, (pending.value if pending.ready() else None)
    finally:
        sock.close()
        if pending.ready():
            pending.value.socket.close()
        listener.forget(expected_id)


id_lines = st.one_of(
    st.binary(max_size=300),
    mutated(b"{ID}\n"),
    st.tuples(st.binary(max_size=10), st.binary(max_size=10)).map(
        lambda pair: pair[0] + b"{ID}" + pair[1] + b"\n"),
    st.text(alphabet="0123456789abcdef-", min_size=30, max_size=40).map(
        lambda text: text.encode() + b"\n"),
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(data=id_lines)
@example(data=b"{ID}\nearly bytes")
def test_id_line_pairs_only_its_own_id(listener, data):
    expected_id, paired = offer(listener, data)
    if paired is None:
        return
    line, _, rest = data.replace(b"{ID}", expected_id.encode()).partition(b"\n")
    assert uuid.UUID(line.strip().decode("ascii")) == uuid.UUID(expected_id)
    assert rest.startswith(paired.early_data)  # what came in the same read as the ID


def test_exact_id_line_pairs(listener):
    _, paired = offer(listener, b"{ID}\nfirst bytes")
    assert paired is not None and paired.early_data == b"first bytes"
