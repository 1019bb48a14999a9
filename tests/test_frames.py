"""Frame-level behaviour, with a raw socket client that can send what libraries refuse to."""

import os
import socket
import struct

import pytest

from support import (RawClient, frame, read_response_head, read_until_closed, running_bridge,
                     upgrade_request)


@pytest.fixture(scope="module")
def bridge():
    """One server for this module's tests, each with its own connections."""
    with running_bridge() as started:
        yield started


# RFC 6455 section 5.7: "A single-frame masked text message ... (contains "Hello")".
RFC_MASKED_HELLO = bytes([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58])


def test_frame_builds_the_rfc_example_byte_for_byte():
    # The tests' own frames against the RFC's bytes, so that what they send is right.
    assert frame(0x1, b"Hello", key=bytes([0x37, 0xfa, 0x21, 0x3d])) == RFC_MASKED_HELLO


def test_the_rfc_masked_hello_is_unmasked_and_echoed(bridge):
    client = RawClient(bridge.port)
    try:
        client.sock.sendall(RFC_MASKED_HELLO)
        assert client.read_frame() == (0x2, b"Hello")  # raw mode echoes bytes as binary
    finally:
        client.close()


# Every violation and its close code is checked on the protocol core
# (test_protocol.py::test_violations_close_with_their_code and the tests after it);
# here each kind the README's Reliability table names, through a real server.
@pytest.mark.parametrize("bad_frame,code", [
    (frame(0x3, b"x"), 1002),                           # reserved opcode
    (frame(0x1, b"x", rsv=0x40), 1002),                 # reserved bit, no extension
    (frame(0x1, b"\xff\xfe"), 1007),                    # invalid UTF-8 in text
], ids=["opcode", "rsv", "utf8"])
def test_protocol_errors_close_with_the_right_code(bridge, bad_frame, code):
    client = RawClient(bridge.port)
    try:
        client.sock.sendall(bad_frame)
        assert client.read_close_code() == code
        assert read_until_closed(client.sock) == b""  # and then the server ends the TCP connection
    finally:
        client.close()
    bridge.wait_no_php()


def test_fragmented_message_is_reassembled_and_pings_answered(bridge):
    client = RawClient(bridge.port)
    try:
        client.sock.sendall(frame(0x1, "hé".encode()[:2], fin=False) + frame(0x9, b"ping!")
                            + frame(0x0, "hé".encode()[2:] + b"llo"))
        assert client.read_frame() == (0xA, b"ping!")
        received = b""
        while len(received) < len("héllo".encode()):
            opcode, payload = client.read_frame()
            assert opcode == 0x2
            received += payload
        assert received == "héllo".encode()
        client.sock.sendall(frame(0x8, struct.pack("!H", 1000)))
        assert client.read_close_code() == 1000
    finally:
        client.close()


def test_frame_length_encodings(bridge):
    client = RawClient(bridge.port)
    try:
        # 300,000 after 1,000,000: a payload in the buffer a larger one left
        for size in (0, 1, 125, 126, 65535, 65536, 200000, 1000000, 300000):
            payload = os.urandom(size)
            client.sock.sendall(frame(0x2, payload))
            received = b""
            while len(received) < size:
                received += client.read_frame()[1]
            assert received == payload, size
    finally:
        client.close()


def test_frames_sent_with_the_upgrade_request_are_not_lost(bridge):
    sock = socket.create_connection(("127.0.0.1", bridge.port), timeout=10)
    try:
        # The handshake and two frames in one packet: the frames sit in the
        # handler's read buffer before the WebSocket exists.
        sock.sendall(upgrade_request() + frame(0x2, b"first") + frame(0x2, b"second"))
        assert read_response_head(sock).startswith(b"HTTP/1.1 101 ")
        client = RawClient.__new__(RawClient)
        client.sock = sock
        received = b""
        while len(received) < len(b"firstsecond"):
            received += client.read_frame()[1]
        assert received == b"firstsecond"
    finally:
        sock.close()


def test_frames_cut_anywhere_are_read_whole(bridge):
    # A frame, then the start of the next one's header, then the rest a byte
    # at a time, each read by the server before the next is sent: the receive
    # buffer must join what each receive brings.
    client = RawClient(bridge.port)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        payload = os.urandom(300)
        second = frame(0x2, payload)
        client.sock.sendall(frame(0x2, b"first") + second[:3])
        for index in range(3, 12):
            client.wait_read_by_server()
            client.sock.sendall(second[index:index + 1])
        client.sock.sendall(second[12:])
        received = b""
        while len(received) < 5 + 300:
            received += client.read_frame()[1]
        assert received == b"first" + payload
    finally:
        client.close()
