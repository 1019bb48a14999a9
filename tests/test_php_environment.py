"""The WSS_* contract with PHP (greenbridge/php_environment.py): the environment built from
a known request, what PHP inherits, how a request is captured, the README's table, and
Greenbridge.php read through a real bridge against the declared variables.

Expected values are written out by hand (or come from the client, cryptography, hashlib),
never from the code under test; only the list of declared names comes from the contract.
"""

import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import sys
import uuid
from types import SimpleNamespace

import docutils.nodes
import pytest
from cryptography.hazmat.primitives import hashes
from websockets.sync.client import connect

from certs import make_ca
from greenbridge.channels.tokens import ConnectionToken
from greenbridge.php_environment import (CONNECT_BACK, VARIABLES, build_environment,
                                         inherited_environment, withheld_for_secrets)
from greenbridge.request import Rejected, capture_request
from greenbridge.routing import Endpoint
from greenbridge.tls.layer import ClientCertificate
from support import REPO, client_context, readme_document
from tls_client import connect_wss

CONTRACT_PHP = os.path.join(REPO, "tests", "php", "contract.php")
LIBRARY_PATH = os.path.join(REPO, "greenbridge", "php", "Greenbridge.php")
DECLARED = [variable.name for variable in VARIABLES]
# Given only over TLS, the last six only with a client certificate.
TLS_VARIABLES = {"WSS_TLS", "WSS_CLIENT_CERT_SUBJECT", "WSS_CLIENT_CERT_ISSUER",
                 "WSS_CLIENT_CERT_SERIAL", "WSS_CLIENT_CERT_FINGERPRINT",
                 "WSS_CLIENT_CERT_VERIFIED", "WSS_CLIENT_CERT_PEM"}
# Given only with a valid connection token (WSS_TOKEN_INFO only when it has an info claim).
TOKEN_VARIABLES = {"WSS_USER", "WSS_TOKEN_INFO"}


def never_trusted(address):
    return False


def request_from(environ, is_trusted_proxy=never_trusted):
    """capture_request on a WSGI environ with what greenbridge's handler always sets."""
    environ = {"REMOTE_ADDR": "192.0.2.7", "REMOTE_PORT": "50123",
               "greenbridge.local_address": ("127.0.0.1", 8080), **environ}
    return capture_request(environ, is_trusted_proxy)


# -- the environment built from a known request (no I/O) -------------------------


def test_every_declared_variable_of_a_known_wss_request_with_a_client_certificate():
    request = request_from({
        "PATH_INFO": "/chat", "QUERY_STRING": "room=1", "HTTP_HOST": "ws.example.test",
        "HTTP_ORIGIN": "https://app.example.test", "HTTP_USER_AGENT": "agent/1",
        "HTTP_SEC_WEBSOCKET_PROTOCOL": "chat.v1, chat.v0", "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "HTTP_X_FORWARDED_FOR": "203.0.113.9", "HTTP_X_REAL_IP": "203.0.113.10",
        "HTTP_X_NAME": "J\xc3\xbcrgen",  # UTF-8 bytes as WSGI hands them over
    })
    request = dataclasses.replace(request, tls=True, client_certificate=ClientCertificate(
        "CN=alice", "CN=CA", 0xBEEF01, b"DER bytes", "-----BEGIN...", True),
        token=ConnectionToken("alice", ("news",), {"name": "Jürgen", "id": [1, None]}))
    inherited = {"PATH": "/usr/bin", "WSS_ENABLED": "inherited, then replaced"}
    environment = build_environment(inherited, request, "0b9d-id", ("127.0.0.1", 40001),
                                    Endpoint("/srv/chat.php", "framed", "chat.v1"))
    assert environment == {
        "PATH": "/usr/bin",
        "WSS_ENABLED": "1",
        "WSS_CONNECTION_ID": "0b9d-id",
        "WSS_CLIENT_IP": "192.0.2.7",
        "WSS_CLIENT_PORT": "50123",
        "WSS_SERVER_HOST": "127.0.0.1",
        "WSS_SERVER_PORT": "8080",
        "WSS_REQUEST_URI": "/chat?room=1",
        "WSS_REQUEST_PATH": "/chat",
        "WSS_REQUEST_QUERY": "room=1",
        "WSS_REQUEST_HEADERS": '{"host": "ws.example.test", "origin": "https://app.example.test", '
                               '"user-agent": "agent/1", "sec-websocket-protocol": "chat.v1, '
                               'chat.v0", "sec-websocket-version": "13", "x-forwarded-for": '
                               '"203.0.113.9", "x-real-ip": "203.0.113.10", "x-name": "Jürgen"}',
        "WSS_TCP_HOST": "127.0.0.1",
        "WSS_TCP_PORT": "40001",
        "WSS_MESSAGE_MODE": "framed",
        "WSS_PHP_LIB": LIBRARY_PATH,
        "WSS_SUBPROTOCOL": "chat.v1",
        "WSS_SEC_WEBSOCKET_PROTOCOL": "chat.v1, chat.v0",
        "WSS_SEC_WEBSOCKET_VERSION": "13",
        "WSS_ORIGIN": "https://app.example.test",
        "WSS_USER_AGENT": "agent/1",
        "WSS_HOST": "ws.example.test",
        "WSS_X_FORWARDED_FOR": "203.0.113.9",
        "WSS_X_REAL_IP": "203.0.113.10",
        "WSS_USER": "alice",
        "WSS_TOKEN_INFO": '{"name": "J\\u00fcrgen", "id": [1, null]}',
        "WSS_TLS": "1",
        "WSS_CLIENT_CERT_SUBJECT": "CN=alice",
        "WSS_CLIENT_CERT_ISSUER": "CN=CA",
        "WSS_CLIENT_CERT_SERIAL": "BEEF01",
        "WSS_CLIENT_CERT_FINGERPRINT": hashlib.sha256(b"DER bytes").hexdigest(),
        "WSS_CLIENT_CERT_VERIFIED": "1",
        "WSS_CLIENT_CERT_PEM": "-----BEGIN...",
    }
    assert set(environment) - {"PATH"} == set(DECLARED)


def test_what_a_ws_request_did_not_send_is_left_out_and_an_empty_header_is_given():
    request = request_from({"PATH_INFO": "", "QUERY_STRING": "", "HTTP_ORIGIN": ""})
    inherited = {"WSS_SUBPROTOCOL": "from the server's environment"}
    environment = build_environment(inherited, request, "id", ("::1", 1),
                                    Endpoint("/srv/a.php", "raw", None))
    given = set(DECLARED) - TLS_VARIABLES - TOKEN_VARIABLES - {
        "WSS_SUBPROTOCOL", "WSS_SEC_WEBSOCKET_PROTOCOL", "WSS_SEC_WEBSOCKET_VERSION",
        "WSS_USER_AGENT", "WSS_HOST", "WSS_X_FORWARDED_FOR", "WSS_X_REAL_IP"}
    assert set(environment) == given | {"WSS_SUBPROTOCOL"}
    assert environment["WSS_SUBPROTOCOL"] == "from the server's environment"  # not replaced
    assert environment["WSS_ORIGIN"] == ""
    assert (environment["WSS_REQUEST_URI"], environment["WSS_REQUEST_PATH"],
            environment["WSS_REQUEST_QUERY"]) == ("/", "/", "")
    assert environment["WSS_REQUEST_HEADERS"] == '{"origin": ""}'


def test_the_connect_back_variables_are_declared_and_always_given():
    request = request_from({})
    environment = build_environment({}, request, "id", ("127.0.0.1", 9),
                                    Endpoint("/srv/a.php", "raw", None))
    assert set(CONNECT_BACK) <= set(DECLARED)
    assert [environment[name] for name in CONNECT_BACK] == ["127.0.0.1", "9", "id"]


def test_every_variable_is_declared_once_with_its_source_and_meaning():
    assert len(DECLARED) == len(set(DECLARED))
    for variable in VARIABLES:
        assert variable.name.startswith("WSS_") and not variable.name.startswith("WSS_CONFIG_")
        assert variable.source and variable.meaning


# -- what PHP inherits of the server's environment --------------------------------

SERVER_ENVIRONMENT = {
    "PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_TIME": "de_DE", "TZ": "UTC", "HOME": "/home/gb",
    "DATABASE_PASSWORD": "hunter2", "APP_MODE": "prod", "WSS_SITE": "blue",
    "WSS_CONFIG_SCRIPT": "/srv/a.php", "NOTIFY_SOCKET": "/run/systemd/notify",
    "EAB_KEY": "prefix-s3cret-suffix",
}


def settings(php_env="inherit", pass_env=None, secret_values=()):
    return SimpleNamespace(base_environment=SERVER_ENVIRONMENT, php_env=php_env,
                           pass_env=pass_env, secret_values=secret_values)


@pytest.mark.parametrize("php_env, pass_env, inherited", [
    ("inherit", None, {"PATH", "LANG", "LC_TIME", "TZ", "HOME", "DATABASE_PASSWORD",
                       "APP_MODE", "WSS_SITE", "EAB_KEY"}),
    ("inherit", ("APP_MODE", "NOTIFY_SOCKET", "WSS_CONFIG_SCRIPT"), {"APP_MODE", "WSS_SITE"}),
    ("minimal", None, {"PATH", "LANG", "LC_TIME", "TZ", "HOME", "WSS_SITE"}),
    ("minimal", ("APP_MODE",), {"PATH", "LANG", "LC_TIME", "TZ", "HOME", "WSS_SITE",
                                "APP_MODE"}),
])
def test_php_inherits_by_php_env_and_pass_env(php_env, pass_env, inherited):
    chosen = inherited_environment(settings(php_env, pass_env))
    assert chosen == {name: SERVER_ENVIRONMENT[name] for name in inherited}
    assert withheld_for_secrets(settings(php_env, pass_env)) == []


def test_a_variable_holding_a_secret_setting_is_withheld_under_any_name():
    chosen = settings(secret_values=("s3cret", "hunter2"))
    assert set(inherited_environment(chosen)) == {"PATH", "LANG", "LC_TIME", "TZ", "HOME",
                                                  "APP_MODE", "WSS_SITE"}
    assert withheld_for_secrets(chosen) == ["DATABASE_PASSWORD", "EAB_KEY"]
    # Not inherited anyway: not named as withheld.
    assert withheld_for_secrets(settings("minimal", secret_values=("s3cret",))) == []


# -- capturing the request (no I/O) ------------------------------------------------


def test_header_text_is_utf8_when_it_decodes_else_latin1_and_names_are_lower_cased():
    request = request_from({"HTTP_X_UTF8": "caf\xc3\xa9", "HTTP_X_LATIN1": "caf\xe9",
                            "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "",
                            "PATH_INFO": "/\xc3\xa9", "QUERY_STRING": "q=\xe9"})
    assert request.headers == {"x-utf8": "café", "x-latin1": "café", "content-type": "text/plain"}
    assert (request.path, request.query, request.uri) == ("/é", "q=é", "/é?q=é")


@pytest.mark.parametrize("key", ["HTTP_X_NUL", "PATH_INFO", "QUERY_STRING"])
def test_a_nul_byte_php_could_not_be_given_is_refused_with_400(key):
    with pytest.raises(Rejected) as refused:
        request_from({key: "a\x00b"})
    assert refused.value.status == "400 Bad Request"


FORWARDED = {"HTTP_X_FORWARDED_FOR": "198.51.100.1, 203.0.113.5, 10.0.0.2",
             "HTTP_X_FORWARDED_HOST": "[2001:db8::1]:8443, proxy.internal",
             "HTTP_X_FORWARDED_PROTO": "HTTPS", "HTTP_HOST": "backend:8080"}


def trusts_10_slash_8(address):
    return address.startswith("10.")


def test_a_trusted_proxy_names_the_client_and_the_addressed_server():
    request = request_from({**FORWARDED, "REMOTE_ADDR": "10.0.0.1"}, trusts_10_slash_8)
    # The right-most entry that is not a trusted proxy; the proxy's port says nothing.
    assert (request.client_ip, request.client_port) == ("203.0.113.5", 0)
    assert (request.server_host, request.server_port) == ("2001:db8::1", 8443)
    assert (request.addressed_host, request.addressed_scheme) == ("[2001:db8::1]:8443", "https")
    with_real_ip = request_from({**FORWARDED, "REMOTE_ADDR": "10.0.0.1",
                                 "HTTP_X_REAL_IP": " 192.0.2.99 ",
                                 "HTTP_X_FORWARDED_PORT": "443"}, trusts_10_slash_8)
    assert with_real_ip.client_ip == "192.0.2.99"
    assert (with_real_ip.server_host, with_real_ip.server_port) == ("2001:db8::1", 443)


def test_forwarded_headers_from_any_other_peer_are_not_believed():
    request = request_from(FORWARDED, trusts_10_slash_8)
    assert (request.client_ip, request.client_port) == ("192.0.2.7", 50123)
    assert (request.server_host, request.server_port) == ("127.0.0.1", 8080)
    assert (request.addressed_host, request.addressed_scheme) == ("backend:8080", None)


def test_tls_ended_by_the_wsgi_server_is_tls_without_a_certificate():
    assert (request_from({}).tls, request_from({}).client_certificate) == (False, None)
    ended_by_gunicorn = request_from({"wsgi.url_scheme": "https"})
    assert (ended_by_gunicorn.tls, ended_by_gunicorn.client_certificate) == (True, None)


# -- the README's table -------------------------------------------------------------


def test_the_readme_table_is_the_one_the_declarations_give():
    checked = subprocess.run([sys.executable, os.path.join("scripts", "php_environment_table.py"),
                              "--check"], cwd=REPO, capture_output=True, text=True, timeout=60)
    # Its message says what to run.
    assert checked.returncode == 0, checked.stderr


def test_the_readme_table_renders_one_row_per_declared_variable():
    tables = [table for table in readme_document().findall(docutils.nodes.table)
              if [entry.astext() for entry in table.findall(docutils.nodes.entry)][:3]
              == ["variable", "from", "value"]]
    assert len(tables) == 1
    rows = tables[0].findall(docutils.nodes.row)
    names = [next(row.findall(docutils.nodes.entry)).astext() for row in rows]
    assert names == ["variable"] + DECLARED


# -- Greenbridge.php against the contract, through a real bridge --------------------


def inherited_wss_variables():
    """The WSS_* variables the bridge inherits from this test's environment (and passes on)."""
    return {name: value for name, value in os.environ.items()
            if name.startswith("WSS_") and not name.startswith("WSS_CONFIG_")}


def library_report(ws):
    """Send the declared names; contract.php answers with what the library makes of them."""
    ws.send(json.dumps(DECLARED))
    return json.loads(ws.recv(timeout=20))


def assert_library_agrees_with_its_environment(report):
    """env() with and without the prefix, id(), mode(), subprotocol() and headers() give
    what environment() lists, and null for a declared variable PHP was not given."""
    environment = report["environment"]
    for name in DECLARED:
        expected = environment.get(name)
        if name == "WSS_REQUEST_HEADERS":  # environment() decodes this one
            assert json.loads(report["env"][name]) == expected == report["headers"]
            assert report["env_without_prefix"][name] == report["env"][name]
            continue
        assert report["env"][name] == expected, name
        assert report["env_without_prefix"][name] == expected, name
    assert report["id"] == environment["WSS_CONNECTION_ID"]
    assert report["mode"] == environment["WSS_MESSAGE_MODE"]
    assert report["subprotocol"] == environment.get("WSS_SUBPROTOCOL")


def test_the_library_exposes_what_the_contract_declares_for_a_known_request(start_bridge):
    bridge = start_bridge("--route", "/contract=%s,mode=framed,subprotocol=chat.v1" % CONTRACT_PHP,
                          script=CONTRACT_PHP)
    client = socket.create_connection(("127.0.0.1", bridge.port), timeout=10)
    client_port = client.getsockname()[1]
    with connect(bridge.url("/contract?room=1"), sock=client, subprotocols=["chat.v1"],
                 origin="http://app.example.test", user_agent_header="contract-test/1",
                 additional_headers={"X-Forwarded-For": "203.0.113.9",
                                     "X-Real-IP": "203.0.113.10", "X-Name": "Jürgen"},
                 open_timeout=20) as ws:
        sent_headers = {name.lower(): value for name, value in ws.request.headers.raw_items()}
        report = library_report(ws)
    environment = report["environment"]
    assert sent_headers["x-name"] == "Jürgen"
    assert uuid.UUID(environment["WSS_CONNECTION_ID"]).version == 4
    assert environment == {
        **inherited_wss_variables(),
        "WSS_ENABLED": "1",
        "WSS_CONNECTION_ID": environment["WSS_CONNECTION_ID"],
        "WSS_CLIENT_IP": "127.0.0.1",
        "WSS_CLIENT_PORT": str(client_port),
        "WSS_SERVER_HOST": "127.0.0.1",
        "WSS_SERVER_PORT": str(bridge.port),
        "WSS_REQUEST_URI": "/contract?room=1",
        "WSS_REQUEST_PATH": "/contract",
        "WSS_REQUEST_QUERY": "room=1",
        "WSS_REQUEST_HEADERS": sent_headers,
        "WSS_TCP_HOST": "127.0.0.1",
        "WSS_TCP_PORT": str(bridge.tcp_port),
        "WSS_MESSAGE_MODE": "framed",
        "WSS_PHP_LIB": LIBRARY_PATH,
        "WSS_SUBPROTOCOL": "chat.v1",
        "WSS_SEC_WEBSOCKET_PROTOCOL": "chat.v1",
        "WSS_SEC_WEBSOCKET_VERSION": "13",
        "WSS_ORIGIN": "http://app.example.test",
        "WSS_USER_AGENT": "contract-test/1",
        "WSS_HOST": "127.0.0.1:%d" % bridge.port,
        "WSS_X_FORWARDED_FOR": "203.0.113.9",
        "WSS_X_REAL_IP": "203.0.113.10",
    }
    # Every variable PHP got is declared; on ws:// all but the TLS ones.
    assert set(environment) - set(inherited_wss_variables()) == \
        set(DECLARED) - TLS_VARIABLES - TOKEN_VARIABLES
    assert_library_agrees_with_its_environment(report)


def test_the_library_exposes_the_declared_tls_variables_on_wss(start_bridge, tmp_path):
    ca = make_ca()
    cert_path, key_path = ca.issue("localhost", ["localhost"]).write(tmp_path, "server")
    ca_path = tmp_path / "clients-ca.pem"
    ca_path.write_bytes(ca.cert_pem)
    bridge = start_bridge("--tls-mode", "manual", "--tls-cert", cert_path, "--tls-key", key_path,
                          "--tls-client-auth", "request", "--tls-client-auth-ca", str(ca_path),
                          "--message-mode", "framed", script=CONTRACT_PHP)
    alice = ca.issue("alice", client=True)
    context = client_context(ca.cert_pem, alice.write(tmp_path, "alice"))
    with connect_wss(bridge.url("/"), ssl=context, server_hostname="localhost") as ws:
        report = library_report(ws)
    environment = report["environment"]
    assert set(environment) - set(inherited_wss_variables()) == set(DECLARED) - {
        "WSS_SUBPROTOCOL", "WSS_SEC_WEBSOCKET_PROTOCOL", "WSS_ORIGIN", "WSS_X_FORWARDED_FOR",
        "WSS_X_REAL_IP", *TOKEN_VARIABLES}  # what this client did not send or get
    certificate = alice.certificate
    assert {name: environment[name] for name in TLS_VARIABLES} == {
        "WSS_TLS": "1",
        "WSS_CLIENT_CERT_SUBJECT": certificate.subject.rfc4514_string(),
        "WSS_CLIENT_CERT_ISSUER": certificate.issuer.rfc4514_string(),
        "WSS_CLIENT_CERT_SERIAL": "%X" % certificate.serial_number,
        "WSS_CLIENT_CERT_FINGERPRINT": certificate.fingerprint(hashes.SHA256()).hex(),
        "WSS_CLIENT_CERT_VERIFIED": "1",
        "WSS_CLIENT_CERT_PEM": alice.cert_pem.decode(),
    }
    assert_library_agrees_with_its_environment(report)


def test_the_library_needs_exactly_the_declared_connect_back_variables(start_bridge):
    bridge = start_bridge(script=CONTRACT_PHP)
    with connect(bridge.url("/?do=connect_back&names=" + ",".join(CONNECT_BACK)),
                 open_timeout=20) as ws:
        # Sent over a connection the library opened with those variables alone.
        report = json.loads(ws.recv(timeout=20))
    assert report == {"refusals": {
        name: "%s is not set: is this script run by greenbridge?" % name
        for name in CONNECT_BACK}}
