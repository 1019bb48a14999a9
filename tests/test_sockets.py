"""sockets.FastIO on real socket pairs, in this (gevent) process: its waits in the hub."""

import gevent
import pytest
from gevent import socket
from gevent.event import Event
from gevent.socket import wait_read

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
    timed_out, stray_wakes = Event(), []

    def wait_briefly_then_park():
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.05):
                io.recv(65536)
        timed_out.set()
        while True:  # nothing should switch in here any more
            stray_wakes.append(gevent.get_hub().switch())

    parked = gevent.spawn(wait_briefly_then_park)
    assert timed_out.wait(timeout=5)
    wait_until_parked(parked)
    # Data that comes while nobody waits must not wake anyone (the watcher stopped):
    # once the hub has seen it arrive, the greenlet that timed out was left alone.
    left.sendall(b"after")
    with gevent.Timeout(5):
        wait_read(io.socket.fileno())
        gevent.sleep(0)  # every callback of that loop turn has run
        parked.kill()
        assert stray_wakes == []
        assert io.recv(65536) == b"after"


def wait_until_parked(greenlet):
    """Let `greenlet` run until it waits in the hub (one loop turn: it was queued first)."""
    gevent.sleep(0)
    assert greenlet and not greenlet.ready(), "not waiting"


def test_a_killed_reader_stops_waiting(pair):
    left, io = pair
    reader = gevent.spawn(io.recv, 65536)
    wait_until_parked(reader)
    reader.kill(block=True, timeout=1)
    assert reader.dead and isinstance(reader.value, gevent.GreenletExit)
    left.sendall(b"for the next reader")
    assert gevent.spawn(io.recv, 65536).get(timeout=1) == b"for the next reader"


def test_a_stray_switch_into_the_reader_only_makes_it_wait_again(pair):
    left, io = pair
    reader = gevent.spawn(io.recv, 65536)
    wait_until_parked(reader)
    gevent.get_hub().loop.run_callback(reader.switch)
    wait_until_parked(reader)  # the stray switch ran first, then the reader waited again
    left.sendall(b"data")
    assert reader.get(timeout=1) == b"data"
