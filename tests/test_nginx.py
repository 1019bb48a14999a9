"""greenbridge behind a real nginx with the shipped conf/nginx.conf (only ports and paths changed)."""

import json
import os
import socket
import struct
import threading

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from support import (REPO, access_lines, assert_no_other_connection_ran, free_port,
                     php_environment, read_response_head, read_until_closed, start_nginx,
                     stop_process, stopped_log, upgrade_request)

NGINX_SITE = os.path.join(REPO, "conf", "nginx.conf")
# nginx listens here; the client connects from another loopback address, so
# the address PHP is told shows whether the proxy's headers were believed.
CLIENT_ADDRESS = "127.0.0.5"


class FastCgiStub:
    """A minimal FastCGI responder standing in for PHP-FPM: answers with the params it got."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                self._answer(conn)

    @staticmethod
    def _read_record(conn):
        header = b""
        while len(header) < 8:
            header += conn.recv(8 - len(header))
        _version, kind, request_id, length, padding, _ = struct.unpack("!BBHHBB", header)
        body = b""
        while len(body) < length + padding:
            body += conn.recv(length + padding - len(body))
        return kind, request_id, body[:length]

    def _answer(self, conn):
        params = b""
        while True:
            kind, request_id, body = self._read_record(conn)
            if kind == 4:  # FCGI_PARAMS
                params += body
            if kind == 5 and not body:  # end of FCGI_STDIN
                break
        decoded = self._decode_params(params)
        output = b"Status: 200 OK\r\nContent-Type: application/json\r\n\r\n" + json.dumps(decoded).encode()
        conn.sendall(struct.pack("!BBHHBB", 1, 6, request_id, len(output), 0, 0) + output)
        conn.sendall(struct.pack("!BBHHBB", 1, 6, request_id, 0, 0, 0))
        conn.sendall(struct.pack("!BBHHBB", 1, 3, request_id, 8, 0, 0) + b"\0" * 8)

    @staticmethod
    def _decode_params(data):
        params, position = {}, 0

        def length():
            nonlocal position
            if data[position] < 128:
                position += 1
                return data[position - 1]
            position += 4
            return struct.unpack("!I", data[position - 4:position])[0] & 0x7FFFFFFF

        while position < len(data):
            name_length, value_length = length(), length()
            name = data[position:position + name_length].decode()
            position += name_length
            params[name] = data[position:position + value_length].decode()
            position += value_length
        return params

    def close(self):
        self.listener.close()


@pytest.fixture
def nginx(tmp_path):
    """start(bridge_port) -> nginx port; nginx runs the shipped site config as our own process."""
    started = []

    def start(bridge_port, fastcgi_port):
        port = free_port()
        site = open(NGINX_SITE).read()
        replacements = [
            ("listen 80;", "listen 127.0.0.1:%d;" % port),
            ("server 127.0.0.1:8080;", "server 127.0.0.1:%d;" % bridge_port),
            ("root /var/www/app/public;", "root %s;" % tmp_path),
            ("include fastcgi_params;", "include /etc/nginx/fastcgi_params;"),
            ("fastcgi_pass unix:/run/php/php-fpm.sock;", "fastcgi_pass 127.0.0.1:%d;" % fastcgi_port),
        ]
        for old, new in replacements:
            assert old in site, "conf/nginx.conf no longer has %r" % old
            site = site.replace(old, new)
        started.append(start_nginx(tmp_path, site, port))
        return port

    yield start
    for process in started:
        stop_process(process, timeout=15)


@pytest.fixture
def fastcgi():
    stub = FastCgiStub()
    yield stub
    stub.close()


def client_socket(port):
    """A TCP connection to nginx from CLIENT_ADDRESS."""
    sock = socket.socket()
    sock.bind((CLIENT_ADDRESS, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def test_websocket_through_nginx_with_trusted_proxy(start_bridge, nginx, fastcgi):
    bridge = start_bridge("--trusted-proxy", "127.0.0.1/32")
    port = nginx(bridge.port, fastcgi.port)
    with connect("ws://127.0.0.1:%d/any/path" % port, sock=client_socket(port)) as ws:
        ws.send(b"through nginx")
        assert ws.recv(timeout=15) == b"through nginx"

    env = php_environment("ws://127.0.0.1:%d/chat/room?x=1" % port, sock=client_socket(port),
                          additional_headers={"X-Forwarded-For": "203.0.113.9"})
    assert env["WSS_CLIENT_IP"] == CLIENT_ADDRESS
    assert env["WSS_CLIENT_PORT"] == "0"
    assert env["WSS_REQUEST_URI"] == "/chat/room?x=1&do=env"
    assert env["WSS_SERVER_PORT"] == str(port)
    assert env["WSS_SERVER_HOST"] == "127.0.0.1"
    # What the client itself claimed stays visible, as a header.
    assert env["WSS_X_FORWARDED_FOR"] == "203.0.113.9, %s" % CLIENT_ADDRESS


def test_proxy_headers_are_not_believed_from_an_untrusted_peer(start_bridge, nginx, fastcgi):
    bridge = start_bridge()
    port = nginx(bridge.port, fastcgi.port)
    env = php_environment("ws://127.0.0.1:%d/" % port, sock=client_socket(port),
                          additional_headers={"X-Forwarded-For": "203.0.113.9"})
    assert env["WSS_CLIENT_IP"] == "127.0.0.1"  # nginx's address
    assert env["WSS_SERVER_PORT"] == str(bridge.port)
    assert env["WSS_X_REAL_IP"] == CLIENT_ADDRESS
    assert env["WSS_REQUEST_URI"] == "/?do=env"


def test_direct_client_cannot_spoof_its_address(start_bridge):
    # The proxy is trusted, but this client is not the proxy.
    bridge = start_bridge("--trusted-proxy", "127.0.0.1")
    env = php_environment(bridge.url(), sock=client_socket(bridge.port),
                          additional_headers={"X-Real-IP": "198.51.100.1",
                                              "X-Forwarded-Port": "1"})
    assert env["WSS_CLIENT_IP"] == CLIENT_ADDRESS
    assert env["WSS_SERVER_PORT"] == str(bridge.port)
    assert env["WSS_X_REAL_IP"] == "198.51.100.1"


def test_same_origin_lets_in_the_page_behind_nginx_on_its_port_and_refuses_others(
        start_readme_bridge, nginx, fastcgi):
    """The README's nginx command line behind the shipped conf/nginx.conf on a port other than
    80: a page of the site nginx serves may connect, a page anywhere else may not."""
    bridge = start_readme_bridge("nginx-bridge", [("-c bridge.conf", "-c conf/bridge.conf")])
    port = nginx(bridge.port, fastcgi.port)
    for host in ("127.0.0.1", "localhost"):
        page = "http://%s:%d" % (host, port)
        with connect("ws://%s:%d/" % (host, port), sock=client_socket(port), origin=page) as ws:
            ws.send("from the page")
            assert ws.recv(timeout=15) == "from the page"  # PHP (conf/echo.php) ran
    for elsewhere in ("http://127.0.0.1",                     # the port left out
                      "http://127.0.0.1:%d" % bridge.port,     # the bridge's own port
                      "https://127.0.0.1:%d" % port,           # another scheme
                      "http://evil.example:%d" % port):
        with pytest.raises(InvalidStatus) as refusal:
            with connect("ws://127.0.0.1:%d/" % port, sock=client_socket(port),
                         origin=elsewhere):
                pass
        assert refusal.value.response.status_code == 403, elsewhere
    assert len(access_lines(stopped_log(bridge))) == 2  # refused pages started no PHP


def upgrade_status(port, source_address, extra_headers):
    """The status line a hand-written upgrade (Host: 127.0.0.1) from `source_address` gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source_address, 0)) as sock:
        sock.sendall(upgrade_request(extra=extra_headers))
        return read_response_head(sock).split(b"\r\n")[0]


def test_forwarded_host_and_scheme_count_for_same_origin_only_from_a_trusted_proxy(
        start_bridge):
    bridge = start_bridge("--same-origin", "--trusted-proxy", "127.0.0.1")
    claimed_host = (b"Origin: https://app.example:8443\r\n"
                    b"X-Forwarded-Host: app.example:8443\r\nX-Forwarded-Proto: https\r\n")
    assert upgrade_status(bridge.port, "127.0.0.1", claimed_host).startswith(b"HTTP/1.1 101 ")
    assert upgrade_status(bridge.port, CLIENT_ADDRESS, claimed_host) == b"HTTP/1.1 403 Forbidden"
    # Host is 127.0.0.1 (port 80 for http, 443 for https): the scheme the proxy saw decides.
    https = b"X-Forwarded-Proto: https\r\n"
    assert upgrade_status(bridge.port, "127.0.0.1",
                          https + b"Origin: http://127.0.0.1\r\n") == b"HTTP/1.1 403 Forbidden"
    assert upgrade_status(bridge.port, "127.0.0.1",
                          https + b"Origin: https://127.0.0.1\r\n").startswith(b"HTTP/1.1 101 ")
    # From a peer that is not a proxy, Host alone counts, whatever it claims.
    assert upgrade_status(bridge.port, CLIENT_ADDRESS,
                          https + b"Origin: http://127.0.0.1\r\n").startswith(b"HTTP/1.1 101 ")
    bridge.assert_serves()


def test_rightmost_untrusted_forwarded_for_entry_is_the_client(start_bridge):
    bridge = start_bridge("--trusted-proxy", "127.0.0.0/8,10.0.0.0/8")
    forwarded = "198.51.100.1, 203.0.113.5, 10.1.2.3"
    env = php_environment(bridge.url(), additional_headers={"X-Forwarded-For": forwarded})
    assert env["WSS_CLIENT_IP"] == "203.0.113.5"


def test_plain_http_through_nginx_reaches_the_front_controller(start_bridge, nginx, fastcgi):
    bridge = start_bridge()
    port = nginx(bridge.port, fastcgi.port)
    with client_socket(port) as sock:
        sock.sendall(b"GET /blog/post?id=3 HTTP/1.0\r\nHost: example.com\r\n\r\n")
        response = read_until_closed(sock)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    params = json.loads(body)
    assert params["SCRIPT_FILENAME"].endswith("/index.php")
    assert params["REQUEST_URI"] == "/blog/post?id=3"
    assert_no_other_connection_ran(bridge)  # the page started no PHP of the bridge's
