"""Heartbeats: the bridge pings quiet clients and lets go of those that stop answering.

After a ping the bridge looks again when --ping-timeout has passed: it pings
again only if something (the pong) came meanwhile, else it closes. So every
ping after the first shows that the pong before it counted.
"""

import logging
import struct

from websockets.sync.client import connect

from greenbridge.cli import parse_config
from support import REQUIRED, RawClient, frame, wait_until


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


class PingCounter(logging.Handler):
    """Counts the pings a websockets client received, from its debug log of frames."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.pings = 0

    def emit(self, record):
        if record.getMessage().startswith("< PING"):
            self.pings += 1


def test_client_that_answers_pings_stays(start_bridge):
    bridge = start_bridge("--ping-interval", "0.2", "--ping-timeout", "1")
    counter = PingCounter()
    client_log = logging.getLogger("test_heartbeat.client")
    client_log.setLevel(logging.DEBUG)
    client_log.propagate = False
    client_log.addHandler(counter)
    try:
        with connect(bridge.url(), logger=client_log) as ws:  # websockets answers pings itself
            wait_until(lambda: counter.pings >= 3, timeout=30, what="a third ping")
            ws.send(b"still here")
            assert ws.recv(timeout=10) == b"still here"
    finally:
        client_log.removeHandler(counter)
    bridge.wait_for_log(r"greenbridge\.access: .* close=1000 ")


def test_a_pong_answers_even_when_the_client_sends_nothing_else(start_bridge):
    bridge = start_bridge("--ping-interval", "0.3", "--ping-timeout", "1")
    client = RawClient(bridge.port)
    try:
        for _ in range(3):
            opcode, payload = client.read_frame()
            assert (opcode, payload) == (0x9, b"greenbridge")
            client.sock.sendall(frame(0xA, payload))
        client.sock.sendall(frame(0x2, b"data"))
        for _ in range(100):  # pings may come before the echo
            opcode, payload = client.read_frame()
            if opcode == 0x2:
                break
        assert (opcode, payload) == (0x2, b"data")
    finally:
        client.close()
    bridge.wait_for_log(r"greenbridge\.access: .* close=1006 'client disconnected without close frame'")


def test_ping_interval_zero_turns_heartbeats_off(start_bridge):
    # 0 stays 0, not the 30 s default (which no test could wait out)...
    assert parse_config([*REQUIRED, "--ping-interval", "0"], {}).ping_interval == 0
    # ...and the flag's 0 wins over the environment's 0.2: were 0 taken for "not given",
    # a ping would come first.
    bridge = start_bridge("--ping-interval", "0", "--connection-timeout", "1.5",
                          env={"WSS_CONFIG_PING_INTERVAL": "0.2"})
    client = RawClient(bridge.port)
    try:
        opcode, payload = client.read_frame()  # the first frame is the timeout's close
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1001
        assert b"connection timeout" in payload
    finally:
        client.close()
