"""wss://: certificates of every mode and key type, client certificates, options, reloads.

Clients are real: the websockets library and Python's ssl module over TLS,
and ``openssl s_client`` where the issue asks to see ciphers, groups and ALPN.
"""

import collections
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from certs import DAY, NOW, make_ca, make_self_signed_client, make_version_2_certificate
from tls_client import connect_wss
from greenbridge.cli import build_parser
from support import (ECHO_PHP, KEY_TYPES, LIST_FORMS, REPO, REQUIRED, admin_port, certificate_of,
                     client_context, http_get, list_option_sources, php_environment,
                     read_until_closed, readme_option_table, run_cli, scrape, served_certificate,
                     stopped_log, tls_connection, value, wait_each_worker_serves, wait_until)

DOMAINS = ["localhost", "*.example.test", "127.0.0.1"]


@pytest.fixture(scope="module")
def ca():
    return make_ca("greenbridge test CA")


@pytest.fixture(scope="module")
def other_ca():
    return make_ca("some other CA")


@pytest.fixture
def server_files(tmp_path, ca):
    """A manual-mode certificate (issued by `ca`) and key, as files."""
    return ca.issue("localhost", ["localhost"]).write(tmp_path, "server")


def key_type_of(certificate):
    """The --tls-key-type name of a certificate's key."""
    key = certificate.public_key()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "p256", "secp384r1": "p384"}[key.curve.name]
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa%d" % key.key_size
    return type(key).__name__


# PHP sends its WSS_* variables as JSON and exits; the server then closes.
ENV_UPGRADE = (b"GET /?do=env&then_exit=1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")


TLSExchange = collections.namedtuple("TLSExchange", "env version session reused")


def tls_exchange(port, context, session=None):
    """One single-threaded wss:// connection (resuming `session` if given) asking PHP for
    its environment."""
    with tls_connection(port, context, session=session) as tls:
        tls.sendall(ENV_UPGRADE)
        received = read_until_closed(tls)
        # Read to the end: a TLS 1.3 session ticket comes after the handshake.
        return TLSExchange(json.loads(data_frames_payload(received)), tls.version(),
                           tls.session, tls.session_reused)


def data_frames_payload(received):
    """The payloads of the data frames after a 101 answer, up to the close frame, joined."""
    head, _, frames = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), received[:200]
    payload = b""
    while frames:
        opcode, length, offset = frames[0] & 0x0F, frames[1] & 0x7F, 2
        if length == 126:
            length, offset = struct.unpack("!H", frames[2:4])[0], 4
        elif length == 127:
            length, offset = struct.unpack("!Q", frames[2:10])[0], 10
        if opcode == 0x8:
            break
        payload += frames[offset:offset + length]
        frames = frames[offset + length:]
    return payload


def assert_echoes(ws, text="ping"):
    ws.send(text)
    assert ws.recv(timeout=20) == text.encode()


# Answered with 426 and a close, so s_client (with -ign_eof) reports the whole session.
NOT_AN_UPGRADE = b"GET / HTTP/1.0\r\n\r\n"


def s_client(port, *args, stdin=NOT_AN_UPGRADE):
    """openssl s_client's report of one connection that sends `stdin` and reads to the end."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", "localhost",
         "-ign_eof", *args], input=stdin, capture_output=True, timeout=60)
    return result.stdout.decode("latin-1") + result.stderr.decode("latin-1")


def start_failure(*flags):
    """Run the bridge expecting it to refuse to start; return (status, output)."""
    result = run_cli(*REQUIRED, "-H", "127.0.0.1", "-P", "0", *flags, timeout=60)
    return result.returncode, result.stdout + result.stderr


# -- certificate modes ------------------------------------------------------

@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_internal_mode_serves_a_self_signed_certificate_of_each_key_type(start_bridge, key_type):
    domain_flags = [flag for domain in DOMAINS for flag in ("--tls-domain", domain)]
    bridge = start_bridge("--tls-mode", "internal", "--tls-key-type", key_type, *domain_flags,
                          script=ECHO_PHP)
    assert bridge.url().startswith("wss://")
    certificate = served_certificate(bridge.port)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "*.example.test"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert key_type_of(certificate) == key_type
    # Trusting exactly that certificate, hostname checks pass for every name in it.
    trusting = client_context(certificate.public_bytes(Encoding.PEM))
    for hostname in ("localhost", "chat.example.test"):
        with connect_wss(bridge.url(), ssl=trusting, server_hostname=hostname,
                     open_timeout=20) as ws:
            assert_echoes(ws, "héllo from " + hostname)


def test_default_internal_certificate_is_ed25519_for_localhost(start_bridge):
    bridge = start_bridge("--tls-mode", "internal")
    certificate = served_certificate(bridge.port)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert key_type_of(certificate) == "ed25519"


def test_manual_mode_serves_the_full_chain_and_php_is_told_it_is_tls(start_bridge, tmp_path,
                                                                     ca):
    intermediate = ca.issue("greenbridge test intermediate", ca=True)
    cert_path, key_path = intermediate.issue("localhost", ["localhost"]).write(
        tmp_path, "chain", chain=True)
    bridge = start_bridge("--tls-mode", "manual", "--tls-cert", cert_path, "--tls-key", key_path)
    # The client trusts only the root: the handshake works only if the chain is sent.
    env = php_environment(bridge.url(), ssl=client_context(ca.cert_pem),
                          server_hostname="localhost")
    assert env["WSS_TLS"] == "1"
    assert not [name for name in env if name.startswith("WSS_CLIENT_CERT_")]
    assert env["WSS_SERVER_PORT"] == str(bridge.port)


def test_plain_ws_tells_php_nothing_about_tls(start_bridge):
    bridge = start_bridge()
    assert "WSS_TLS" not in php_environment(bridge.url())


def test_manual_mode_from_environment_variables(start_bridge, server_files, ca):
    cert_path, key_path = server_files
    bridge = start_bridge(env={"WSS_CONFIG_TLS_MODE": "manual", "WSS_CONFIG_TLS_CERT": cert_path,
                               "WSS_CONFIG_TLS_KEY": key_path})
    with connect_wss(bridge.url(), ssl=client_context(ca.cert_pem), server_hostname="localhost",
                 open_timeout=20) as ws:
        assert_echoes(ws)


# -- client certificates ----------------------------------------------------

OK, REFUSED = "ok", "refused"
# mode -> outcome for (no certificate, certificate from the CA, certificate from another CA)
CLIENT_AUTH_OUTCOMES = {
    "none": (OK, OK, OK),
    "request": (OK, OK, OK),
    "require": (REFUSED, OK, OK),
    "verify-if-given": (OK, OK, REFUSED),
    "require-and-verify": (REFUSED, OK, REFUSED),
}


@pytest.mark.parametrize("mode", list(CLIENT_AUTH_OUTCOMES))
def test_client_auth_mode(start_bridge, tmp_path, ca, other_ca, server_files, mode):
    cert_path, key_path = server_files
    ca_path = tmp_path / "clients-ca.pem"
    ca_path.write_bytes(ca.cert_pem)
    bridge = start_bridge("--tls-mode", "manual", "--tls-cert", cert_path, "--tls-key", key_path,
                          "--tls-client-auth", mode, "--tls-client-auth-ca", str(ca_path),
                          "-l", "debug")
    good = ca.issue("alice", client=True)
    stranger = other_ca.issue("mallory", client=True)
    clients = [None, good.write(tmp_path, "good"), stranger.write(tmp_path, "stranger")]
    for client, outcome, issued in zip(clients, CLIENT_AUTH_OUTCOMES[mode],
                                       (None, good, stranger)):
        context = client_context(ca.cert_pem, client)
        if outcome == REFUSED:
            # TLS 1.3 clients may learn of it only when they read the HTTP answer.
            with pytest.raises((OSError, InvalidHandshake, ConnectionClosed)):
                php_environment(bridge.url(), ssl=context, server_hostname="localhost")
            continue
        env = php_environment(bridge.url(), ssl=context, server_hostname="localhost")
        assert env["WSS_TLS"] == "1"
        if client is None or mode == "none":
            assert "WSS_CLIENT_CERT_SUBJECT" not in env
            continue
        certificate = issued.certificate
        assert env["WSS_CLIENT_CERT_SUBJECT"] == certificate.subject.rfc4514_string()
        assert env["WSS_CLIENT_CERT_ISSUER"] == certificate.issuer.rfc4514_string()
        assert int(env["WSS_CLIENT_CERT_SERIAL"], 16) == certificate.serial_number
        assert env["WSS_CLIENT_CERT_FINGERPRINT"] == certificate.fingerprint(hashes.SHA256()).hex()
        assert env["WSS_CLIENT_CERT_PEM"].encode() == issued.cert_pem
        assert env["WSS_CLIENT_CERT_VERIFIED"] == ("1" if issued is good else "0")
    if REFUSED in CLIENT_AUTH_OUTCOMES[mode]:
        bridge.wait_for_log(r"DEBUG greenbridge\.tls: TLS handshake with 127\.0\.0\.1:\d+ failed")
    assert "Traceback" not in stopped_log(bridge)


def test_client_certificate_with_openssl_s_client(start_bridge, tmp_path, ca, server_files):
    cert_path, key_path = server_files
    ca_path = tmp_path / "clients-ca.pem"
    ca_path.write_bytes(ca.cert_pem)
    bridge = start_bridge("--tls-mode", "manual", "--tls-cert", cert_path, "--tls-key", key_path,
                          "--tls-client-auth", "require-and-verify",
                          "--tls-client-auth-ca", str(ca_path))
    client_cert, client_key = ca.issue("bob", client=True).write(tmp_path, "bob")
    report = s_client(bridge.port, "-cert", client_cert, "-key", client_key, stdin=ENV_UPGRADE)
    assert "101 Switching Protocols" in report
    assert '"WSS_CLIENT_CERT_SUBJECT":"O=greenbridge tests,CN=bob"' in report
    assert '"WSS_CLIENT_CERT_VERIFIED":"1"' in report
    # Without a certificate the server ends the handshake.
    refused = s_client(bridge.port, stdin=ENV_UPGRADE)
    assert "101 Switching Protocols" not in refused
    assert "certificate required" in refused or "handshake failure" in refused


# (the only version offered, its name in ssl, whether the client takes session tickets)
RESUMPTIONS = {
    "tls1.2-session-id": (ssl.TLSVersion.TLSv1_2, "TLSv1.2", False),
    "tls1.2-ticket": (ssl.TLSVersion.TLSv1_2, "TLSv1.2", True),
    "tls1.3-psk": (ssl.TLSVersion.TLSv1_3, "TLSv1.3", True),
}


@pytest.mark.parametrize("resumption", list(RESUMPTIONS))
@pytest.mark.parametrize("mode", ["request", "require"])
def test_a_resumed_session_keeps_the_verdict_on_the_client_certificate(
        start_bridge, tmp_path, ca, server_files, mode, resumption):
    cert_path, key_path = server_files
    ca_path = tmp_path / "clients-ca.pem"
    ca_path.write_bytes(ca.cert_pem)
    bridge = start_bridge("--tls-mode", "manual", "--tls-cert", cert_path, "--tls-key", key_path,
                          "--tls-client-auth", mode, "--tls-client-auth-ca", str(ca_path))
    version, version_name, tickets = RESUMPTIONS[resumption]
    for issued, verified in ((ca.issue("alice", client=True), "1"),
                             (make_self_signed_client("mallory"), "0")):
        context = client_context(ca.cert_pem, issued.write(tmp_path, "client"), version, version)
        if not tickets:
            context.options |= ssl.OP_NO_TICKET  # the server falls back to its session cache
        first = tls_exchange(bridge.port, context)
        assert first.version == version_name and not first.reused
        assert first.session.has_ticket == tickets
        second = tls_exchange(bridge.port, context, first.session)
        assert second.reused, "the server did not resume the session"
        fingerprint = issued.certificate.fingerprint(hashes.SHA256()).hex()
        for exchange in (first, second):
            assert exchange.env["WSS_CLIENT_CERT_FINGERPRINT"] == fingerprint
            assert exchange.env["WSS_CLIENT_CERT_VERIFIED"] == verified, exchange.env
    assert "Traceback" not in stopped_log(bridge)


def test_a_client_certificate_cryptography_cannot_read_is_refused_with_400(start_bridge, tmp_path,
                                                                           ca, server_files):
    cert_path, key_path = server_files
    bridge = start_bridge("--tls-mode", "manual", "--tls-cert", cert_path, "--tls-key", key_path,
                          "--tls-client-auth", "request")
    der, key = make_version_2_certificate("version 2")
    odd_cert, odd_key = tmp_path / "v2.crt", tmp_path / "v2.key"
    odd_cert.write_text(ssl.DER_cert_to_PEM_cert(der))
    odd_key.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    context = client_context(ca.cert_pem, (str(odd_cert), str(odd_key)))
    with tls_connection(bridge.port, context) as tls:
        tls.sendall(ENV_UPGRADE)
        assert read_until_closed(tls).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    bridge.wait_for_log(r"INFO greenbridge\.app: GET / from 127\.0\.0\.1: 400 Bad Request "
                        r"\(unreadable client certificate \(InvalidVersion: 1 is not a valid "
                        r"X509 version\)\)")
    # Served as before: a readable certificate, and none.
    alice = ca.issue("alice", client=True)
    env = tls_exchange(bridge.port, client_context(ca.cert_pem, alice.write(tmp_path, "a"))).env
    assert env["WSS_CLIENT_CERT_SUBJECT"] == "O=greenbridge tests,CN=alice"
    assert "WSS_CLIENT_CERT_PEM" not in tls_exchange(bridge.port, client_context(ca.cert_pem)).env
    assert "Traceback" not in stopped_log(bridge)


# -- options ------------------------------------------------------------------

def test_ciphers_limit_both_tls_versions(start_bridge):
    bridge = start_bridge("--tls-mode", "internal", "--tls-key-type", "p256",
                          "--tls-ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256",
                          "--tls-ciphers", "TLS_CHACHA20_POLY1305_SHA256")
    assert "Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" in s_client(bridge.port, "-tls1_2")
    refused = s_client(bridge.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384")
    assert "alert handshake failure" in refused, refused  # the server's alert
    assert "Cipher is TLS_CHACHA20_POLY1305_SHA256" in s_client(bridge.port, "-tls1_3")
    refused = s_client(bridge.port, "-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384")
    assert "alert handshake failure" in refused, refused  # the server's alert


def test_curves_limit_the_key_exchange_groups(start_bridge):
    bridge = start_bridge("--tls-mode", "internal", "--tls-curves", "P-384",
                          "--tls-curves", "X25519")
    assert "Server Temp Key: ECDH, secp384r1" in s_client(bridge.port, "-groups", "P-384") \
        or "Server Temp Key: ECDH, P-384" in s_client(bridge.port, "-groups", "P-384")
    assert "Server Temp Key: X25519" in s_client(bridge.port, "-groups", "X25519")
    refused = s_client(bridge.port, "-groups", "P-256")
    assert "alert handshake failure" in refused, refused  # the server's alert


def test_alpn_is_negotiated(start_bridge):
    bridge = start_bridge("--tls-mode", "internal", "--tls-alpn", "http/1.1", script=ECHO_PHP)
    assert "ALPN protocol: http/1.1" in s_client(bridge.port, "-alpn", "h2,http/1.1")
    # No common protocol: served without ALPN (s_client says "No ALPN" after a refusal too).
    without_alpn = s_client(bridge.port, "-alpn", "h2")
    assert "No ALPN negotiated" in without_alpn and "HTTP/1.1 426 " in without_alpn, without_alpn
    context = client_context()
    context.set_alpn_protocols(["http/1.1"])
    with connect_wss(bridge.url(), ssl=context, open_timeout=20) as ws:
        assert_echoes(ws)


@pytest.mark.parametrize("form", LIST_FORMS)
def test_domains_and_alpn_take_comma_separated_values_from_environment_and_config_file(
        start_bridge, tmp_path, form):
    flags, environment = list_option_sources(form, {
        ("tls-domain", "WSS_CONFIG_TLS_DOMAINS"): ["a.example.test", "b.example.test"],
        ("tls-alpn", "WSS_CONFIG_TLS_ALPN"): ["x-other", "http/1.1"],
    }, tmp_path)
    bridge = start_bridge("--tls-mode", "internal", *flags, env=environment, script=ECHO_PHP)
    context = client_context()
    context.set_alpn_protocols(["http/1.1"])
    with tls_connection(bridge.port, context, "a.example.test") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        served = certificate_of(tls)
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["a.example.test", "b.example.test"]


def test_secrets_log_holds_the_same_secrets_as_the_client(start_bridge, tmp_path):
    server_log, client_log = tmp_path / "server-keys.log", tmp_path / "client-keys.log"
    bridge = start_bridge("--tls-mode", "internal", "--tls-secrets-log", str(server_log),
                          script=ECHO_PHP)
    bridge.wait_for_log(r"WARNING greenbridge\.tls: INSECURE: TLS session secrets are written")
    context = client_context()
    context.keylog_filename = str(client_log)
    with connect_wss(bridge.url(), ssl=context, open_timeout=20) as ws:
        assert_echoes(ws)
    client_lines = set(client_log.read_text().split("\n")) - {""}
    client_lines = {line for line in client_lines if not line.startswith("#")}
    assert any(line.startswith("CLIENT_TRAFFIC_SECRET_0 ") for line in client_lines)
    assert client_lines <= set(server_log.read_text().split("\n"))


@pytest.fixture
def usual_umask():
    """umask 022 (files 0644 unless asked otherwise) for the servers this test starts."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_secrets_log_is_created_readable_by_its_owner_only(start_bridge, tmp_path, usual_umask):
    path = tmp_path / "keys.log"
    start_bridge("--tls-mode", "internal", "--tls-secrets-log", str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secrets_log_others_can_read_is_left_alone_until_made_private(start_bridge, tmp_path):
    path = tmp_path / "keys.log"
    path.write_bytes(b"# an earlier capture\n")
    path.chmod(0o640)
    status, output = start_failure("--tls-mode", "internal", "--tls-secrets-log", str(path))
    assert status == 2 and "can be read by other users (mode 0640)" in output, output
    assert path.read_bytes() == b"# an earlier capture\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    path.chmod(0o600)
    bridge = start_bridge("--tls-mode", "internal", "--tls-secrets-log", str(path),
                          script=ECHO_PHP)
    with connect_wss(bridge.url(), ssl=client_context(), open_timeout=20) as ws:
        assert_echoes(ws)
    kept, _, appended = path.read_bytes().partition(b"\n")
    assert kept == b"# an earlier capture" and b"\nCLIENT_TRAFFIC_SECRET_0 " in b"\n" + appended


def test_min_version_1_3_refuses_tls_1_2(start_bridge):
    bridge = start_bridge("--tls-mode", "internal", "--tls-min-version", "1.3")
    with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION"):  # the server's alert
        served_certificate(bridge.port, client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
    assert negotiated_version(bridge.port, client_context()) == "TLSv1.3"


def negotiated_version(port, context):
    """The version of a completed handshake (s_client names one for a failed TLS 1.2 one too)."""
    with tls_connection(port, context) as tls:
        return tls.version()


def tls_1_1_client():
    """A client that speaks only TLS 1.1 (which needs OpenSSL's security level 0: SHA-1)."""
    context = client_context(maximum_version=ssl.TLSVersion.TLSv1_1,
                             minimum_version=ssl.TLSVersion.TLSv1_1)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def version_agreed_with_a_server_allowing_tls_1_1(client, cert_path, key_path):
    """The TLS version `client` gets from Python's ssl serving the same pair, TLS 1.1 allowed."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_1
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    server.load_cert_chain(cert_path, key_path)
    with socket.create_server(("127.0.0.1", 0)) as listener, ThreadPoolExecutor(1) as pool:
        listener.settimeout(20)
        accepted = pool.submit(lambda: server.wrap_socket(listener.accept()[0], server_side=True))
        with socket.create_connection(listener.getsockname(), timeout=20) as raw, \
                client.wrap_socket(raw, server_hostname="localhost") as tls:
            version = tls.version()
        accepted.result(timeout=20).close()
    return version


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_default_min_version_refuses_tls_1_1_with_a_protocol_version_alert(start_bridge,
                                                                          server_files):
    if not ssl.HAS_TLSv1_1:
        pytest.skip("this OpenSSL cannot speak TLS 1.1 at all: nothing to refuse")
    cert_path, key_path = server_files
    client = tls_1_1_client()
    # The refusal below is the server's: this client does get TLS 1.1 where it is allowed.
    assert version_agreed_with_a_server_allowing_tls_1_1(client, cert_path, key_path) == "TLSv1.1"
    bridge = start_bridge("--tls-mode", "manual", "--tls-cert", cert_path, "--tls-key", key_path,
                          script=ECHO_PHP)
    with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION"):
        served_certificate(bridge.port, client)
    tls_1_2 = client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    assert negotiated_version(bridge.port, tls_1_2) == "TLSv1.2"


TLS_OPTIONS = [
    ("--tls-mode", "WSS_CONFIG_TLS_MODE", "none"),
    ("--tls-domain", "WSS_CONFIG_TLS_DOMAINS", None),
    ("--tls-key-type", "WSS_CONFIG_TLS_KEY_TYPE", None),  # by mode: see test_acme_config
    ("--tls-cert", "WSS_CONFIG_TLS_CERT", None),
    ("--tls-key", "WSS_CONFIG_TLS_KEY", None),
    ("--tls-client-auth", "WSS_CONFIG_TLS_CLIENT_AUTH_MODE", "none"),
    ("--tls-client-auth-ca", "WSS_CONFIG_TLS_CLIENT_AUTH_CA", None),
    ("--tls-ciphers", "WSS_CONFIG_TLS_CIPHERS", None),
    ("--tls-curves", "WSS_CONFIG_TLS_CURVES", None),
    ("--tls-alpn", "WSS_CONFIG_TLS_ALPN", None),
    ("--tls-secrets-log", "WSS_CONFIG_TLS_INSECURE_SECRETS_LOG", None),
    ("--tls-min-version", "WSS_CONFIG_TLS_MIN_VERSION", "1.2"),
]


@pytest.mark.parametrize("flag,env_name,default", TLS_OPTIONS)
def test_every_tls_option_has_its_environment_variable_and_is_in_the_readme(flag, env_name,
                                                                             default):
    actions = {action.dest: action for action in build_parser()._actions}
    action = actions[flag[2:].replace("-", "_")]
    assert action.option_strings == [flag]
    assert action.env_var == env_name
    assert action.default == default
    assert readme_option_table()[flag] == env_name


# -- live reload --------------------------------------------------------------

def test_sighup_reloads_and_open_connections_keep_working(start_bridge, tmp_path, ca):
    first = ca.issue("localhost", ["localhost"])
    cert_path, key_path = first.write(tmp_path, "live")
    bridge = start_bridge("--tls-mode", "manual", "--tls-cert", cert_path, "--tls-key", key_path,
                          script=ECHO_PHP)
    trusting = client_context(ca.cert_pem)
    with connect_wss(bridge.url(), ssl=trusting, server_hostname="localhost",
                 open_timeout=20) as ws:
        assert_echoes(ws, "before")
        assert served_certificate(bridge.port).serial_number == first.certificate.serial_number

        second = ca.issue("localhost", ["localhost"])
        second.write(tmp_path, "live")
        bridge.signal(signal.SIGHUP)
        bridge.wait_for_log("serving certificate serial %x" % second.certificate.serial_number)
        assert served_certificate(bridge.port).serial_number == second.certificate.serial_number, bridge.log
        assert_echoes(ws, "after")

        # A key that does not match is refused; the second pair keeps serving.
        (tmp_path / "live.key").write_bytes(ca.issue("x", ["x"]).key_pem)
        bridge.signal(signal.SIGHUP)
        bridge.wait_for_log(r"ERROR greenbridge\.tls: SIGHUP: certificate not reloaded, the old "
                            r"one stays: .*does not match the certificate")
        assert served_certificate(bridge.port).serial_number == second.certificate.serial_number, bridge.log
        assert_echoes(ws, "still")
    assert bridge.process.poll() is None


def test_changed_files_are_reloaded_without_a_signal(start_bridge, tmp_path, ca):
    first = ca.issue("localhost", ["localhost"])
    cert_path, key_path = first.write(tmp_path, "watched")
    bridge = start_bridge("--tls-mode", "manual", "--tls-cert", cert_path, "--tls-key", key_path,
                          script=ECHO_PHP)
    with connect_wss(bridge.url(), ssl=client_context(ca.cert_pem), server_hostname="localhost",
                 open_timeout=20) as ws:
        assert_echoes(ws, "before")
        second = ca.issue("localhost", ["localhost"])
        # Replaced the way certbot and most tools do: new files renamed into place.
        second.write(tmp_path, "new")
        os.replace(tmp_path / "new.key", key_path)
        os.replace(tmp_path / "new.crt", cert_path)
        bridge.wait_for_log("serving certificate serial %x" % second.certificate.serial_number,
                            timeout=30)
        assert served_certificate(bridge.port).serial_number == second.certificate.serial_number, bridge.log
        assert_echoes(ws, "after")


# -- bad input ----------------------------------------------------------------

@pytest.fixture
def bad_inputs(tmp_path, ca):
    good_cert, good_key = ca.issue("localhost", ["localhost"]).write(tmp_path, "good")
    _other_cert, other_key = ca.issue("other", ["other"]).write(tmp_path, "other")
    unreadable = tmp_path / "unreadable.key"
    shutil.copy(good_key, unreadable)
    unreadable.chmod(0)
    public_log = tmp_path / "public-keys.log"
    public_log.touch()
    public_log.chmod(0o644)
    return {"cert": good_cert, "key": good_key, "other_key": other_key,
            "unreadable": str(unreadable), "missing": str(tmp_path / "missing.pem"),
            "ca": str(tmp_path / "good.crt"), "public_log": str(public_log)}


@pytest.mark.parametrize("flags,message", [
    (["--tls-mode", "manual", "--tls-cert", "{missing}", "--tls-key", "{key}"],
     r"cannot read certificate file '.*missing\.pem': No such file or directory"),
    (["--tls-mode", "manual", "--tls-cert", "{cert}", "--tls-key", "{other_key}"],
     r"the private key does not match the certificate"),
    (["--tls-mode", "manual", "--tls-cert", "{key}", "--tls-key", "{key}"],
     r"no valid PEM certificate found"),
    (["--tls-mode", "manual", "--tls-cert", "{cert}"], r"--tls-mode manual needs --tls-key"),
    (["--tls-cert", "{cert}", "--tls-key", "{key}"],
     r"--tls-cert and --tls-key need --tls-mode manual"),
    (["--tls-mode", "internal", "--tls-key-type", "dsa1024"],
     r"argument --tls-key-type: invalid choice \(ed25519, p256, p384, rsa2048, rsa4096\) "
     r"value: 'dsa1024'"),
    (["--tls-mode", "automate"], r"--tls-mode automate needs at least one --tls-domain"),
    (["--tls-mode", "internal", "--tls-client-auth", "require-and-verify"],
     r"--tls-client-auth require-and-verify needs --tls-client-auth-ca"),
    (["--tls-mode", "internal", "--tls-client-auth", "verify-if-given",
      "--tls-client-auth-ca", "{missing}"], r"--tls-client-auth-ca: '.*missing\.pem' is not"),
    (["--tls-mode", "internal", "--tls-client-auth", "request", "--tls-client-auth-ca",
      "{key}"], r"--tls-client-auth-ca: '.*good\.key' holds no usable PEM CA certificate"),
    (["--tls-mode", "internal", "--tls-ciphers", "ECDHE-RSA-AES128-GCM-SHA256:NOPE-CIPHER"],
     r"--tls-ciphers: unknown cipher suite 'NOPE-CIPHER'"),
    (["--tls-mode", "internal", "--tls-curves", "X25519", "--tls-curves", "P-999"],
     r"--tls-curves: unknown key-exchange group 'P-999'"),
    (["--tls-mode", "internal", "--tls-min-version", "1.1"],
     r"argument --tls-min-version: invalid choice \(1\.2, 1\.3\) value: '1\.1'"),
    (["--tls-mode", "internal", "--tls-secrets-log", "/nonexistent-dir/keys.log"],
     r"--tls-secrets-log: cannot open '/nonexistent-dir/keys.log'"),
    (["--tls-mode", "internal", "--tls-secrets-log", "{public_log}"],
     r"--tls-secrets-log: '.*public-keys\.log' can be read by other users \(mode 0644\); "
     r"chmod 600 it or name a new file"),
])
def test_bad_tls_input_stops_start_up_with_one_line(bad_inputs, flags, message):
    status, output = start_failure(*[flag.format(**bad_inputs) for flag in flags])
    assert status == 2, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, output
    assert re.search(message, errors[0]), output


def test_unreadable_key_stops_start_up(bad_inputs):
    if os.geteuid() == 0:
        # root reads any file: a file that is not there is the nearest failure.
        bad_inputs["unreadable"] = bad_inputs["missing"]
    status, output = start_failure("--tls-mode", "manual", "--tls-cert", bad_inputs["cert"],
                                   "--tls-key", bad_inputs["unreadable"])
    assert status == 2 and "Traceback" not in output
    assert "cannot read key file" in output


def test_an_expired_certificate_warns_and_is_served(start_bridge, tmp_path, ca):
    expired = ca.issue("localhost", ["localhost"], not_before=NOW - 10 * DAY,
                       not_after=NOW - DAY)
    cert_path, key_path = expired.write(tmp_path, "expired")
    bridge = start_bridge("--tls-mode", "manual", "--tls-cert", cert_path, "--tls-key", key_path)
    bridge.wait_for_log(r"WARNING greenbridge\.tls: certificate from .* expired on .*; "
                        r"serving it anyway")
    assert served_certificate(bridge.port).serial_number == expired.certificate.serial_number


# -- hardening ----------------------------------------------------------------

def test_plain_http_and_garbage_on_the_tls_port_are_dropped_quietly(start_bridge):
    bridge = start_bridge("--tls-mode", "internal", "-l", "debug", script=ECHO_PHP)
    for junk in (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", os.urandom(300) + b"\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", bridge.port), timeout=20) as sock:
            sock.sendall(junk)
            assert b"HTTP/1.1 " not in read_until_closed(sock)
    bridge.wait_for_log(r"DEBUG greenbridge\.tls: TLS handshake with 127\.0\.0\.1:\d+ failed: "
                        r"TLS: .*http request")
    with connect_wss(bridge.url(), ssl=client_context(), open_timeout=20) as ws:
        assert_echoes(ws)
    assert "Traceback" not in stopped_log(bridge)


def test_a_stalled_handshake_holds_no_slot_and_is_cut(start_bridge):
    bridge = start_bridge("--tls-mode", "internal", "--max-connections", "1", "-l", "debug",
                          "--handshake-timeout", "3", script=ECHO_PHP)
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=60) as stalled:
        # The only connection slot is free for a real client meanwhile.
        with connect_wss(bridge.url(), ssl=client_context(), open_timeout=20) as ws:
            assert_echoes(ws)
        started = time.monotonic()
        assert read_until_closed(stalled) == b""  # the server hung up on the silent client
    assert time.monotonic() - started < 50  # bounded by the socket timeout, not a speed claim
    bridge.wait_for_log(r"client 127\.0\.0\.1:\d+: no complete upgrade request within 3s "
                        r"\(in the TLS handshake\)")


def test_stalled_tls_handshakes_count_against_the_pending_cap(start_bridge):
    bridge = start_bridge("--tls-mode", "internal", "--max-pending-handshakes", "3",
                          "--handshake-timeout", "60", script=ECHO_PHP)
    stalled = [socket.create_connection(("127.0.0.1", bridge.port), timeout=30)
               for _ in range(6)]
    try:
        # Over the cap, the oldest stalled clients are dropped long before 60 s.
        for sock in stalled[:3]:
            assert read_until_closed(sock) == b""
        with connect_wss(bridge.url(), ssl=client_context(), open_timeout=20) as ws:
            assert_echoes(ws)
    finally:
        for sock in stalled:
            sock.close()
    bridge.wait_for_log(r"client 127\.0\.0\.1:\d+: dropped for a newer client "
                        r"\(3 handshakes pending\) \(in the TLS handshake\)")


# -- shipped examples -----------------------------------------------------------

def test_shipped_tls_config_files_work(start_bridge, server_files, ca):
    # script=None: each serves its own script (conf/echo.php, framed: text stays text).
    internal = start_bridge("-c", os.path.join(REPO, "conf", "tls-internal.conf"), script=None)
    assert key_type_of(served_certificate(internal.port)) == "p256"
    cert_path, key_path = server_files
    manual = start_bridge("-c", os.path.join(REPO, "conf", "tls-manual.conf"),
                          "--tls-cert", cert_path, "--tls-key", key_path, script=None)
    with connect_wss(manual.url(), ssl=client_context(ca.cert_pem), server_hostname="localhost",
                     open_timeout=20) as ws:
        ws.send("ping")
        assert ws.recv(timeout=20) == "ping"


def test_workers_share_one_certificate_and_each_reloads_on_sighup(start_bridge, tmp_path, ca):
    first = ca.issue("localhost", ["localhost"])
    cert_path, key_path = first.write(tmp_path, "shared")
    bridge = start_bridge("--workers", "2", "--tls-mode", "manual", "--tls-cert", cert_path,
                          "--tls-key", key_path, script=ECHO_PHP)
    second = ca.issue("localhost", ["localhost"])
    second.write(tmp_path, "shared")
    # Sent while the workers may still be starting: each must still end up
    # serving the new pair (a worker forked after the change sees it too).
    bridge.signal(signal.SIGHUP)
    wait_each_worker_serves(
        bridge, lambda served: served.serial_number == second.certificate.serial_number)


def test_metrics_and_readiness_follow_the_served_certificate(start_bridge, tmp_path, ca):
    first = ca.issue("localhost", ["localhost"], not_after=NOW + 30 * DAY)
    cert_path, key_path = first.write(tmp_path, "served")
    bridge = start_bridge("--tls-mode", "manual", "--tls-cert", cert_path, "--tls-key", key_path,
                          "--admin-port", "0", script=ECHO_PHP)
    port = admin_port(bridge)
    name = "greenbridge_tls_certificate_expiry_timestamp_seconds"
    assert value(scrape(port), name) == first.certificate.not_valid_after_utc.timestamp()
    assert http_get(port, "/readyz") == (200, "ready\n")

    second = ca.issue("localhost", ["localhost"], not_after=NOW + 60 * DAY)
    second.write(tmp_path, "served")
    bridge.signal(signal.SIGHUP)
    wait_until(lambda: value(scrape(port), name)
               == second.certificate.not_valid_after_utc.timestamp(), 30,
               lambda: "%s showing the new certificate's expiry:\n%s" % (name, bridge.log))
