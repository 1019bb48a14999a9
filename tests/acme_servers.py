"""A real ACME test CA on loopback: pebble, pebble-challtestsrv and BIND 9, started per session.

pebble answers ACME over HTTPS with a certificate from a throw-away CA made
here; pebble-challtestsrv is its DNS (every name -> 127.0.0.1, TXT records set
through its management API); a second pebble uses a BIND 9 ``named`` that
accepts TSIG-signed dynamic updates. Everything listens on free loopback ports
and is stopped by PID.
"""

import base64
import http.server
import json
import os
import pathlib
import shutil
import ssl
import subprocess
import threading
import urllib.error
import urllib.request

import pytest

from certs import make_ca
from support import free_port, stop_process, wait_for_port

BLOCKED_DOMAIN = "blocked.test"
# challtestsrv resolves this one to 127.0.0.2, where nothing answers HTTP-01.
ELSEWHERE_DOMAIN = "elsewhere.test"
RFC2136_ZONE = "rfc2136.test"
TSIG_KEY_NAME = "greenbridge-key"
TSIG_SECRET = base64.b64encode(b"greenbridge test tsig secret 32b").decode()
EAB_KEY_ID = "greenbridge-eab"
EAB_MAC_KEY = base64.urlsafe_b64encode(b"greenbridge eab hmac key 32 byte").decode().rstrip("=")


def make_throwaway_ca(folder):
    """A CA and a certificate for 127.0.0.1 signed by it; returns (ca, cert, key) paths."""
    ca = make_ca("greenbridge throw-away CA for pebble")
    ca_path = os.path.join(folder, "ca.pem")
    with open(ca_path, "wb") as file:
        file.write(ca.cert_pem)
    cert_path, key_path = ca.issue("127.0.0.1", names=("127.0.0.1", "localhost")).write(
        pathlib.Path(folder), "pebble")
    return ca_path, cert_path, key_path


class ChallTestSrv:
    """pebble-challtestsrv: the test DNS; every name resolves to 127.0.0.1 unless told otherwise."""

    def __init__(self, folder):
        self.dns_port = free_port()
        self.management_port = free_port()
        self.log = open(os.path.join(folder, "challtestsrv.log"), "wb")
        self.process = subprocess.Popen(
            ["pebble-challtestsrv", "-dns01", "127.0.0.1:%d" % self.dns_port,
             "-management", "127.0.0.1:%d" % self.management_port,
             "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_port(self.management_port, self.process, "pebble-challtestsrv")
        self.manage("add-a", host=ELSEWHERE_DOMAIN + ".", addresses=["127.0.0.2"])

    def manage(self, command, **body):
        request = urllib.request.Request(
            "http://127.0.0.1:%d/%s" % (self.management_port, command),
            data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def stop(self):
        stop_process(self.process)
        self.log.close()


class Named:
    """BIND 9 serving RFC2136_ZONE on a free loopback port, updatable with a TSIG key."""

    def __init__(self, folder):
        self.port = free_port()
        folder = os.path.join(folder, "named")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "zone.db"), "w") as zone:
            zone.write("$TTL 60\n"
                       "@ IN SOA ns.{0}. admin.{0}. 1 60 60 600 60\n"
                       "@ IN NS ns.{0}.\n"
                       "ns IN A 127.0.0.1\n"
                       "* IN A 127.0.0.1\n".format(RFC2136_ZONE))
        config = os.path.join(folder, "named.conf")
        with open(config, "w") as conf:
            conf.write("""
options {{
    directory "{folder}";
    pid-file "{folder}/named.pid";
    session-keyfile "{folder}/session.key";
    managed-keys-directory "{folder}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
key "{key_name}" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "{zone}" {{
    type primary;
    file "{folder}/zone.db";
    allow-update {{ key "{key_name}"; }};
}};
""".format(folder=folder, port=self.port, key_name=TSIG_KEY_NAME, secret=TSIG_SECRET,
           zone=RFC2136_ZONE))
        # Run from a copy: Debian's AppArmor profile for /usr/sbin/named forbids
        # configuration and zone files outside /etc/bind and /var.
        executable = os.path.join(folder, "named")
        shutil.copy(shutil.which("named") or "/usr/sbin/named", executable)
        self.log = open(os.path.join(folder, "named.log"), "wb")
        self.process = subprocess.Popen(
            [executable, "-g", "-c", config], stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        wait_for_port(self.port, self.process, "named")

    def txt(self, name):
        """The TXT values `name` has now, asked with dig (what any resolver would see)."""
        output = subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(self.port), "+short", "TXT", name],
            capture_output=True, text=True, timeout=30, check=True).stdout
        return [line.strip('"') for line in output.split()]

    def stop(self):
        stop_process(self.process)
        self.log.close()


class Pebble:
    """pebble on free loopback ports, its HTTPS from a throw-away CA, its DNS given."""

    def __init__(self, folder, name, dns_port, ca_files, eab=False, authz_reuse=0):
        ca, cert, key = ca_files
        self.ca_bundle = ca
        self.http01_port = free_port()
        self.port = free_port()
        self.management_port = free_port()
        config = {"pebble": {
            "listenAddress": "127.0.0.1:%d" % self.port,
            "managementListenAddress": "127.0.0.1:%d" % self.management_port,
            "certificate": cert, "privateKey": key,
            "httpPort": self.http01_port, "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": eab,
            "externalAccountMACKeys": {EAB_KEY_ID: EAB_MAC_KEY} if eab else {},
            "domainBlocklist": [BLOCKED_DOMAIN],
        }}
        config_path = os.path.join(folder, name + ".json")
        with open(config_path, "w") as file:
            json.dump(config, file)
        environment = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0",
                           PEBBLE_AUTHZREUSE=str(authz_reuse))
        self.log = open(os.path.join(folder, name + ".log"), "wb")
        self.process = subprocess.Popen(
            ["pebble", "-config", config_path, "-dnsserver", "127.0.0.1:%d" % dns_port],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=environment)
        wait_for_port(self.port, self.process, "pebble")
        wait_for_port(self.management_port, self.process, "pebble management")

    @property
    def directory(self):
        return "https://127.0.0.1:%d/dir" % self.port

    def management_get(self, path):
        context = ssl.create_default_context(cafile=self.ca_bundle)
        url = "https://127.0.0.1:%d%s" % (self.management_port, path)
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return response.read()

    def trust(self):
        """An SSL context that trusts only what this pebble issues (its root)."""
        context = ssl.create_default_context(cadata=self.management_get("/roots/0").decode())
        context.load_verify_locations(cadata=self.management_get("/intermediates/0").decode())
        return context

    def stop(self):
        stop_process(self.process)
        self.log.close()


@pytest.fixture(scope="session")
def acme_folder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("acme-servers"))


@pytest.fixture(scope="session")
def throwaway_ca(acme_folder):
    return make_throwaway_ca(acme_folder)


@pytest.fixture(scope="session")
def challtestsrv(acme_folder):
    server = ChallTestSrv(acme_folder)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pebble(acme_folder, challtestsrv, throwaway_ca):
    """pebble resolving names with pebble-challtestsrv."""
    server = Pebble(acme_folder, "pebble", challtestsrv.dns_port, throwaway_ca)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def named(acme_folder):
    server = Named(acme_folder)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pebble_with_named(acme_folder, named, throwaway_ca):
    """pebble resolving names with BIND 9 (for the rfc2136 provider)."""
    server = Pebble(acme_folder, "pebble-named", named.port, throwaway_ca)
    yield server
    server.stop()


class RateLimitedCA:
    """pebble behind a proxy that refuses every new order with 429 rateLimited.

    pebble enforces no rate limits; Let's Encrypt answers a new order over its
    limits exactly like this. Everything else is passed through to pebble with
    the proxy's Host, so pebble's URLs point at the proxy.
    """

    DETAIL = 'too many certificates (5) already issued for this exact set of identifiers'

    def __init__(self, pebble, cert_path, key_path):
        self.pebble = pebble
        self.port = free_port()
        self._context = ssl.create_default_context(cafile=pebble.ca_bundle)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port),
                                                       self._handler_class())
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert_path, key_path)
        self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def directory(self):
        return "https://127.0.0.1:%d/dir" % self.port

    def _handler_class(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._forward()

            def do_GET(self):
                self._forward()

            def do_POST(self):
                if self.path == "/order-plz":
                    self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    self._refuse()
                else:
                    self._forward()

            def _refuse(self):
                nonce = proxy._upstream("HEAD", "/nonce-plz")[1].get("Replay-Nonce")
                body = json.dumps({"type": "urn:ietf:params:acme:error:rateLimited",
                                   "detail": proxy.DETAIL, "status": 429}).encode()
                self.send_response(429)
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Replay-Nonce", nonce)
                self.send_header("Retry-After", "3600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length) if length else None
                status, headers, data = proxy._upstream(
                    self.command, self.path, body, self.headers.get("Content-Type"))
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

        return Handler

    def _upstream(self, method, path, body=None, content_type=None):
        request = urllib.request.Request("https://127.0.0.1:%d%s" % (self.pebble.port, path),
                                         data=body, method=method)
        request.add_header("Host", "127.0.0.1:%d" % self.port)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, context=self._context, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


@pytest.fixture(scope="session")
def rate_limited_ca(pebble, throwaway_ca):
    proxy = RateLimitedCA(pebble, throwaway_ca[1], throwaway_ca[2])
    yield proxy
    proxy.stop()
