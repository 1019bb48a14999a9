"""sockets.FastIO on real socket pairs, in this (gevent) process: its waits in the hub."""

import gevent
import pytest
from gevent import socket

from greenbridge.sockets import FastIO


@pytest.fixture
def pair():
    left, right = socket.socketpair()
    io = FastIO(right)
    yield left, io
    io.close()
    left.close()
    right.close()


def test_recv_waits_for_data_sent_later(pair):
    left, io = pair
    gevent.spawn_later(0.05, left.sendall, b"late")
    assert io.recv(65536) == b"late"
    buffer = bytearray(4)
    gevent.spawn_later(0.05, left.sendall, b"into")
    assert io.recv_into(buffer) == 4 and buffer == b"into"


def test_a_timeout_ends_a_wait_and_the_next_one_still_works(pair):
    left, io = pair
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            io.recv(65536)
    # Data that comes while nobody waits must not wake anyone (the watcher stopped).
    left.sendall(b"after")
    gevent.sleep(0.05)
    assert io.recv(65536) == b"after"


def test_a_killed_reader_stops_waiting(pair):
    left, io = pair
    reader = gevent.spawn(io.recv, 65536)
    gevent.sleep(0.05)
    reader.kill(block=True, timeout=1)
    assert reader.dead and isinstance(reader.value, gevent.GreenletExit)
    left.sendall(b"for the next reader")
    assert gevent.spawn(io.recv, 65536).get(timeout=1) == b"for the next reader"


def test_a_stray_switch_into_the_reader_only_makes_it_wait_again(pair):
    left, io = pair
    reader = gevent.spawn(io.recv, 65536)
    gevent.sleep(0.05)
    gevent.get_hub().loop.run_callback(reader.switch)
    gevent.sleep(0.05)
    assert not reader.ready()
    left.sendall(b"data")
    assert reader.get(timeout=1) == b"data"
