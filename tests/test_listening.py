"""Which addresses only this machine reaches (listening.is_loopback), on its own.

It decides the start-up warnings about a server other machines reach; test_hardening.py
keeps those warnings, and their absence, through a real server."""

import pytest

from greenbridge.listening import is_loopback


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True),
    ("127.0.0.2", True),             # all of 127.0.0.0/8
    ("127.255.255.254", True),
    ("::1", True),
    ("::ffff:127.0.0.1", True),      # IPv4 loopback, as a dual-stack socket names it
    ("0.0.0.0", False),
    ("::", False),
    ("::ffff:0.0.0.0", False),
    ("128.0.0.1", False),
    ("192.0.2.1", False),
    ("fe80::1%eth0", False),
])
def test_only_addresses_of_this_machine_alone_are_loopback(host, loopback):
    assert is_loopback(host) is loopback
