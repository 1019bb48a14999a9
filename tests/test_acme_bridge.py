"""The whole bridge in --tls-mode automate against pebble: served over wss://, renewed live."""

import os
import socket
import stat
import sys

import psutil
import pytest
from cryptography import x509

from acme_servers import (BLOCKED_DOMAIN, EAB_KEY_ID, EAB_MAC_KEY, ELSEWHERE_DOMAIN,
                          RFC2136_ZONE, TSIG_KEY_NAME, TSIG_SECRET, Pebble,
                          acme_folder, challtestsrv, named, pebble,  # noqa: F401 (fixtures)
                          pebble_with_named, throwaway_ca)
from support import (ECHO_PHP, REQUIRED, Bridge, run_cli, served_certificate, stopped_log,
                     wait_each_worker_serves, wait_until)
from tls_client import connect_wss


def automate_flags(pebble, state_dir, *domains):
    flags = ["--tls-mode", "automate", "--tls-key-type", "p256",
             "--tls-acme-directory", pebble.directory, "--tls-acme-ca-bundle", pebble.ca_bundle,
             "--tls-acme-state-dir", str(state_dir),
             "--tls-http01-port", str(pebble.http01_port), "--tls-http01-address", "127.0.0.1"]
    for domain in domains:
        flags += ["--tls-domain", domain]
    return flags


def pebbles_certificate(bridge, pebble, domain):
    """The certificate a new TLS handshake gets, verified against pebble's root for `domain`."""
    return served_certificate(bridge.port, pebble.trust(), domain)


def wss_connect(bridge, pebble, domain):
    return connect_wss("wss://127.0.0.1:%d/" % bridge.port, ssl=pebble.trust(),
                       server_hostname=domain, open_timeout=30)


def test_automate_serves_pebbles_certificate_renews_it_live_and_restarts_from_the_cache(
        start_bridge, throwaway_ca, challtestsrv, acme_folder, tmp_path):
    state_dir = tmp_path / "state"
    own_pebble = Pebble(acme_folder, "pebble-bridge", challtestsrv.dns_port, throwaway_ca)
    try:
        # Every check finds the certificate due: it is renewed about every second.
        bridge = start_bridge(*automate_flags(own_pebble, state_dir, "live.test"),
                              "--tls-renewal-window-ratio", "1",
                              "--tls-renewal-check-interval", "1", script=ECHO_PHP)
        first = pebbles_certificate(bridge, own_pebble, "live.test")
        with wss_connect(bridge, own_pebble, "live.test") as open_connection:
            open_connection.send(b"before the renewal")
            assert open_connection.recv(timeout=10) == b"before the renewal"
            wait_until(lambda: pebbles_certificate(bridge, own_pebble, "live.test").serial_number
                       != first.serial_number, 120, lambda: "a renewal served:\n" + bridge.log)
            open_connection.send(b"after the renewal")
            assert open_connection.recv(timeout=10) == b"after the renewal"
        assert bridge.stop() == 0
    finally:
        own_pebble.stop()
    cached = x509.load_pem_x509_certificate(
        next(state_dir.glob("certificates/*/fullchain.pem")).read_bytes())

    # pebble is gone: what is served now can only come from the cache.
    restarted = start_bridge(*automate_flags(own_pebble, state_dir, "live.test"),
                             script=ECHO_PHP)
    restarted.wait_for_log(r"serving certificate serial %x .*cached in" % cached.serial_number)
    # pebble's root went with it: compare the served certificate itself.
    served = served_certificate(restarted.port, server_hostname="live.test")
    assert served.serial_number == cached.serial_number
    assert "requesting a certificate" not in stopped_log(restarted)


def test_automate_dns01_rfc2136_wildcard_from_the_environment(start_bridge, pebble_with_named,
                                                              named, tmp_path):
    environment = {
        "WSS_CONFIG_TLS_DNS_PROVIDER": "rfc2136",
        "WSS_CONFIG_TLS_DNS_PARAMS": "[server=127.0.0.1, port=%d, key_name=%s, key_secret=%s]"
                                     % (named.port, TSIG_KEY_NAME, TSIG_SECRET),
        "WSS_CONFIG_TLS_RESOLVERS": "127.0.0.1:%d" % named.port,
    }
    bridge = start_bridge(*automate_flags(pebble_with_named, tmp_path / "state",
                                          RFC2136_ZONE, "*." + RFC2136_ZONE),
                          env=environment, script=ECHO_PHP)
    served = pebbles_certificate(bridge, pebble_with_named, "anything." + RFC2136_ZONE)
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sorted(names.value.get_values_for_type(x509.DNSName)) == \
        ["*." + RFC2136_ZONE, RFC2136_ZONE]
    with wss_connect(bridge, pebble_with_named, "ws." + RFC2136_ZONE) as ws:
        ws.send(b"over a wildcard")
        assert ws.recv(timeout=10) == b"over a wildcard"
    assert named.txt("_acme-challenge." + RFC2136_ZONE) == []


def test_automate_dns01_exec_with_workers_each_worker_serves_the_renewed_certificate(
        start_bridge, pebble, challtestsrv, tmp_path):
    hook = os.path.join(os.path.dirname(os.path.abspath(__file__)), "acme", "challtestsrv_hook.py")
    bridge = start_bridge(*automate_flags(pebble, tmp_path / "state", "workers.test"),
                          "--workers", "2", "--tls-dns-provider", "exec",
                          "--tls-dns-param", "command=%s %s %d" % (sys.executable, hook,
                                                                   challtestsrv.management_port),
                          "--tls-resolvers", "127.0.0.1:%d" % challtestsrv.dns_port,
                          "--tls-renewal-window-ratio", "1", "--tls-renewal-check-interval", "1",
                          script=ECHO_PHP)
    first = pebbles_certificate(bridge, pebble, "workers.test").serial_number
    # Worker 1 renews about every few seconds; worker 2 adopts each renewal from
    # the cache. Each worker ends up serving a renewed one.
    wait_each_worker_serves(bridge, lambda served: served.serial_number != first,
                            pebble.trust(), "workers.test", timeout=120)
    bridge.wait_for_log("renewed by another worker")
    with wss_connect(bridge, pebble, "workers.test") as ws:
        ws.send(b"through either worker")
        assert ws.recv(timeout=10) == b"through either worker"


def watch_certbot_until_listening(bridge, timeout=120):
    """Sample the bridge's child processes until it listens: {pid: (command line, environment,
    {file named on the command line: (its mode, its text)})} of every certbot process seen."""
    seen = {}

    def listening_after_a_sample():
        assert bridge.process.poll() is None, bridge.log
        for child in children(bridge):
            try:
                command_line, environment = child.cmdline(), child.environ()
            except psutil.Error:
                continue  # gone meanwhile
            if "certbot.main" in " ".join(command_line):
                files = seen.setdefault(child.pid, (command_line, environment, {}))[2]
                files.update(readable_files(command_line))
        return "listening on" in bridge.log
    wait_until(listening_after_a_sample, timeout, lambda: "the bridge listening:\n" + bridge.log)
    return seen


def children(bridge):
    try:
        return psutil.Process(bridge.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def readable_files(arguments):
    """{argument: (mode, text)} of the arguments that name a file we can read."""
    files = {}
    for argument in arguments:
        try:
            with open(argument, errors="replace") as file:
                files[argument] = (stat.S_IMODE(os.fstat(file.fileno()).st_mode), file.read())
        except OSError:
            pass  # not a file, or a folder
    return files


def test_automate_http01_with_eab_keeps_the_mac_key_off_certbots_command_line(
        throwaway_ca, challtestsrv, acme_folder, tmp_path):
    eab_pebble = Pebble(acme_folder, "pebble-eab-bridge", challtestsrv.dns_port, throwaway_ca,
                        eab=True)
    state_dir = tmp_path / "state"
    bridge = Bridge(["-H", "127.0.0.1", "-P", "0", *REQUIRED,
                     *automate_flags(eab_pebble, state_dir, "eab.test"),
                     "--tls-eab-key-id", EAB_KEY_ID],
                    env={"WSS_CONFIG_TLS_EAB_MAC_KEY": EAB_MAC_KEY})
    try:
        certbots = watch_certbot_until_listening(bridge)
        bridge.wait_listening()
        # pebble requires the binding: a certificate means certbot had the key.
        pebbles_certificate(bridge, eab_pebble, "eab.test")
        assert certbots, "no certbot process seen:\n" + bridge.log
        key_files = {}
        for command_line, environment, files in certbots.values():
            assert not any(EAB_MAC_KEY in argument for argument in command_line), command_line
            assert EAB_MAC_KEY not in "".join(environment.values())
            key_files.update((path, mode) for path, (mode, text) in files.items()
                             if EAB_MAC_KEY in text)
        # certbot got the key from a file that only its owner can read.
        assert key_files and set(key_files.values()) == {0o600}, key_files
        # Nothing left behind in the state directory holds the key.
        for path in state_dir.rglob("*"):
            if path.is_file():
                assert EAB_MAC_KEY.encode() not in path.read_bytes(), path
        assert bridge.stop() == 0
    finally:
        bridge.kill()
        eab_pebble.stop()


@pytest.mark.parametrize("domain,message", [
    (ELSEWHERE_DOMAIN, "does elsewhere.test resolve to this server"),
    (BLOCKED_DOMAIN, "the CA refused: "),
    ("*.wild.test", "wildcard certificates need the DNS-01 challenge"),
])
def test_automate_start_up_failures_are_one_line_and_status_2(pebble, tmp_path, domain,
                                                             message):
    result = run_cli(*REQUIRED, "-H", "127.0.0.1", "-P", "0",
                     *automate_flags(pebble, tmp_path / "state", domain), timeout=120)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line or "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_automate_with_port_80_taken_says_so(pebble, tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        flags = automate_flags(pebble, tmp_path / "state", "port.test")
        flags[flags.index("--tls-http01-port") + 1] = str(port)
        result = run_cli(*REQUIRED, "-H", "127.0.0.1", "-P", "0", *flags, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and ("--tls-http01-port %d: address already in use on 127.0.0.1 "
                                 "(certbot answers the CA's HTTP-01 challenge there" % port
                                 ) in errors[0], result.stderr
    assert "Traceback" not in result.stderr
