"""Heartbeats: the bridge pings quiet clients and lets go of those that stop answering."""

import struct
import time

from websockets.sync.client import connect

from test_frames import RawClient, frame


def test_client_that_ignores_pings_is_closed_1001_and_php_ends(start_bridge):
    bridge = start_bridge("--ping-interval", "0.5", "--ping-timeout", "0.5")
    client = RawClient(bridge.port)  # reads, but never answers a ping
    try:
        opcode, payload = client.read_frame()
        assert opcode == 0x9
        opcode, payload = client.read_frame()
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == 1001
        assert payload[2:] == b"no pong within 0.5s"
    finally:
        client.close()
    bridge.wait_for_log(r"close=1001 'no pong within 0.5s'")
    bridge.wait_no_php()


def test_client_that_answers_pings_stays(start_bridge):
    bridge = start_bridge("--ping-interval", "0.2", "--ping-timeout", "0.5")
    with connect(bridge.url()) as ws:  # websockets answers pings by itself
        deadline = time.monotonic() + 3  # some 10 ping intervals, each answered
        while time.monotonic() < deadline:
            time.sleep(0.5)
        ws.send(b"still here")
        assert ws.recv(timeout=10) == b"still here"
    assert "no pong" not in bridge.log


def test_a_pong_answers_even_when_the_client_sends_nothing_else(start_bridge):
    bridge = start_bridge("--ping-interval", "0.3", "--ping-timeout", "2")
    client = RawClient(bridge.port)
    try:
        for _ in range(3):
            opcode, payload = client.read_frame()
            assert (opcode, payload) == (0x9, b"greenbridge")
            client.sock.sendall(frame(0xA, payload))
        client.sock.sendall(frame(0x2, b"data"))
        while True:
            opcode, payload = client.read_frame()
            if opcode == 0x2:
                break
        assert payload == b"data"
    finally:
        client.close()
    assert "no pong" not in bridge.log


def test_ping_interval_zero_turns_heartbeats_off(start_bridge):
    bridge = start_bridge("--ping-interval", "0", "--connection-timeout", "1.5")
    client = RawClient(bridge.port)
    try:
        opcode, payload = client.read_frame()  # the first frame is the timeout's close
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1001
        assert b"connection timeout" in payload
    finally:
        client.close()
