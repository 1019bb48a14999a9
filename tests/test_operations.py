"""Running it for real: environment hygiene, structured logs, metrics, health, systemd."""

import json
import math
import os
import resource
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import psutil
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from certs import DAY, NOW, make_ca
from support import (REPO, Bridge, access_lines, admin_port, assert_head_matches_get,
                     held_php_environment, http_get, php_environment, raw_http,
                     read_until_closed, scrape, scrape_text, stopped_log, value, wait_closed,
                     wait_until)


def test_pass_env_gives_php_only_the_listed_variables(start_bridge):
    bridge = start_bridge("--pass-env", "GREENBRIDGE_KEEP, PATH",
                          env={"GREENBRIDGE_KEEP": "kept", "GREENBRIDGE_DROP": "dropped",
                               "WSS_CONFIG_SECRET": "hidden"})
    env = php_environment(bridge.url(), full=True)
    assert env["GREENBRIDGE_KEEP"] == "kept"
    assert "PATH" in env
    assert "GREENBRIDGE_DROP" not in env and "HOME" not in env
    assert "WSS_CONFIG_SECRET" not in env
    assert env["WSS_REQUEST_QUERY"] == "do=fullenv"


def test_without_pass_env_php_inherits_everything_but_config(start_bridge):
    bridge = start_bridge(env={"GREENBRIDGE_DROP": "inherited", "WSS_CONFIG_PASS_ENV": ""})
    assert php_environment(bridge.url(), full=True)["GREENBRIDGE_DROP"] == "inherited"


def test_pass_env_from_the_environment_variable(start_bridge):
    bridge = start_bridge(env={"WSS_CONFIG_PASS_ENV": "GREENBRIDGE_KEEP",
                               "GREENBRIDGE_KEEP": "kept", "GREENBRIDGE_DROP": "dropped"})
    env = php_environment(bridge.url(), full=True)
    assert env["GREENBRIDGE_KEEP"] == "kept" and "GREENBRIDGE_DROP" not in env


MINIMAL_SET = {"PATH": os.environ["PATH"], "HOME": "/home/greenbridge", "LANG": "C.UTF-8",
               "LC_TIME": "C", "TZ": "UTC"}


@pytest.mark.parametrize("php_env,pass_env,inherited", [
    ("inherit", None, None),  # None: everything but WSS_CONFIG_*
    ("inherit", "GREENBRIDGE_KEEP", {"GREENBRIDGE_KEEP"}),
    ("minimal", None, set(MINIMAL_SET)),
    ("minimal", "GREENBRIDGE_KEEP", set(MINIMAL_SET) | {"GREENBRIDGE_KEEP"}),
])
def test_php_env_and_pass_env_decide_what_php_inherits(start_bridge, php_env, pass_env,
                                                       inherited):
    environment = dict(MINIMAL_SET, GREENBRIDGE_KEEP="kept", GREENBRIDGE_DROP="dropped",
                       WSS_CONFIG_PHP_ENV=php_env)
    if pass_env:
        environment["WSS_CONFIG_PASS_ENV"] = pass_env
    bridge = start_bridge(env=environment)
    env = php_environment(bridge.url(), full=True)
    server_environment = dict(os.environ, **environment)
    if inherited is None:
        inherited = {name for name in server_environment if not name.startswith("WSS_")}
    assert {name for name in env if not name.startswith("WSS_")} == inherited
    for name in inherited:
        assert env[name] == server_environment[name], name
    assert env["WSS_REQUEST_QUERY"] == "do=fullenv"


EAB_MAC_KEY = "Z3JlZW5icmlkZ2UgdGVzdCBlYWIgbWFjIGtleSAzMmI"
TSIG_SECRET = "Z3JlZW5icmlkZ2UgdGVzdCB0c2lnIHNlY3JldCAzMmI="


@pytest.mark.parametrize("given_as", ["flag", "environment", "config file"])
@pytest.mark.parametrize("php_env,pass_env", [
    ("inherit", None),
    ("minimal", "ACME_EAB_KEY,CA_URL,DNS_KEY,GREENBRIDGE_KEEP"),
])
def test_secret_settings_never_reach_php_under_any_name(start_bridge, tmp_path, given_as,
                                                        php_env, pass_env):
    # The deployment keeps the secrets in variables of its own too (say, to
    # build the settings from them): PHP must get none of them.
    environment = {"ACME_EAB_KEY": EAB_MAC_KEY,
                   "CA_URL": "https://kid:%s@ca.example/" % EAB_MAC_KEY,
                   "DNS_KEY": TSIG_SECRET, "GREENBRIDGE_KEEP": "kept",
                   "WSS_CONFIG_PHP_ENV": php_env}
    if pass_env:
        environment["WSS_CONFIG_PASS_ENV"] = pass_env
    flags = []
    if given_as == "flag":
        flags = ["--tls-eab-mac-key", EAB_MAC_KEY, "--tls-dns-param", "key_secret=" + TSIG_SECRET]
    elif given_as == "environment":
        environment.update(WSS_CONFIG_TLS_EAB_MAC_KEY=EAB_MAC_KEY,
                           WSS_CONFIG_TLS_DNS_PARAMS="[server=ns1, key_secret=%s]" % TSIG_SECRET)
    else:
        config_file = tmp_path / "bridge.conf"
        config_file.write_text("tls-eab-mac-key = %s\ntls-dns-param = [key_secret=%s]\n"
                               % (EAB_MAC_KEY, TSIG_SECRET))
        flags = ["-c", str(config_file)]
    bridge = start_bridge(*flags, env=environment)
    everything = json.dumps(php_environment(bridge.url(), full=True))
    assert EAB_MAC_KEY not in everything and TSIG_SECRET not in everything
    assert '"GREENBRIDGE_KEEP": "kept"' in everything
    bridge.wait_for_log(r"WARNING .*not passed to PHP: ACME_EAB_KEY, CA_URL, DNS_KEY \(")


def test_json_log_lines_carry_the_connection_id_as_a_field(start_bridge):
    bridge = start_bridge("--log-format", "json")
    with connect(bridge.url("/?do=output")) as ws:
        ws.send(b"x")
        ws.recv(timeout=10)
    bridge.wait_for_log(r'"logger": "greenbridge.access"')
    # Every line is one JSON object.
    entries = [json.loads(line) for line in stopped_log(bridge).splitlines()]
    access = [entry for entry in entries if entry["logger"] == "greenbridge.access"]
    assert len(access) == 1
    connection_id = access[0]["connection_id"]
    assert len(connection_id) == 36
    assert access[0]["message"].startswith("127.0.0.1:")
    stderr_line = [entry for entry in entries if entry["message"] == "stderr: a line on stderr"]
    assert stderr_line[0]["connection_id"] == connection_id
    assert stderr_line[0]["level"] == "WARNING"
    assert any("listening on ws://" in entry["message"] for entry in entries)


# -- metrics and health -------------------------------------------------------

def test_metrics_count_known_traffic(start_bridge):
    bridge = start_bridge("--admin-port", "0", "-M", "2")
    port = admin_port(bridge)
    assert http_get(port, "/healthz") == (200, "ok\n")
    assert http_get(port, "/readyz") == (200, "ready\n")

    with connect(bridge.url()) as ws:
        ws.send(b"12345")
        assert ws.recv(timeout=10) == b"12345"
    with connect(bridge.url("/?do=exit&code=3")) as ws:
        ws.send(b"x")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", bridge.tcp_port), timeout=10) as sock:
        sock.sendall(b"not-an-id\n")
        assert sock.recv(10) == b""
    bridge.wait_for_log("back-connection from .* refused")

    with connect(bridge.url()) as first, connect(bridge.url()) as second:
        first.send(b"a")
        second.send(b"b")
        first.recv(timeout=10), second.recv(timeout=10)
        with pytest.raises(InvalidStatus):
            connect(bridge.url())
        during = scrape(port)
    assert value(during, "greenbridge_connections_open") == 2
    assert value(during, "greenbridge_php_processes") == 2
    assert value(during, "greenbridge_bytes_total", direction="to_php") == 5 + 1 + 2

    wait_until(lambda: len(access_lines(bridge.log)) == 4)
    after = scrape(port)
    assert value(after, "greenbridge_connections_open") == 0
    assert value(after, "greenbridge_php_processes") == 0
    assert value(after, "greenbridge_connections_total", code="1000") == 3
    assert value(after, "greenbridge_connections_total", code="1011") == 1
    assert value(after, "greenbridge_handshake_rejections_total", reason="limit") == 1
    assert value(after, "greenbridge_handshake_rejections_total", reason="bad_request") == 1
    assert value(after, "greenbridge_backconnect_rejects_total") == 1
    assert value(after, "greenbridge_php_spawn_failures_total") == 0
    assert value(after, "greenbridge_bytes_total", direction="to_php") == 5 + 1 + 2
    assert value(after, "greenbridge_bytes_total", direction="to_client") == 5 + 2
    assert value(after, "greenbridge_php_connect_back_seconds_count") == 4
    assert value(after, "greenbridge_connection_duration_seconds_count") == 4
    assert http_get(port, "/nothing")[0] == 404


def test_spawn_failures_are_counted(start_bridge, tmp_path):
    script = tmp_path / "handler.php"
    script.write_text("<?php\n")
    php = tmp_path / "php"
    php.write_text("#!/bin/sh\nexec php \"$@\"\n")
    php.chmod(0o755)
    bridge = start_bridge("--admin-port", "0", "--php-connect-retries", "1",
                          script=str(script), php=str(php))
    php.unlink()  # found at start-up, gone when a client comes
    with connect(bridge.url()) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=20)
    assert value(scrape(admin_port(bridge)), "greenbridge_php_spawn_failures_total") == 2


def test_readyz_fails_while_draining(start_bridge):
    bridge = start_bridge("--admin-port", "0", "--shutdown-timeout", "30")
    port = admin_port(bridge)
    with connect(bridge.url()) as ws:
        ws.send(b"x")
        ws.recv(timeout=10)
        bridge.signal(signal.SIGTERM)
        bridge.wait_for_log("waiting up to")
        assert http_get(port, "/readyz") == (503, "not ready: shutting down\n")
        assert http_get(port, "/healthz") == (200, "ok\n")
    assert bridge.process.wait(30) == 0


def test_admin_listener_is_off_by_default(start_bridge):
    bridge = start_bridge()
    assert "admin endpoints" not in stopped_log(bridge)


# -- systemd ------------------------------------------------------------------

@pytest.mark.parametrize("workers", ["1", "2"])
def test_systemd_notifications(start_bridge, tmp_path, workers):
    notify_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(15)
        bridge = start_bridge("--workers", workers, env={"NOTIFY_SOCKET": notify_path})
        wait_until(lambda: bridge.log.count("listening on ws://") == int(workers))
        ready = notify.recv(4096).decode().split("\n")
        assert "READY=1" in ready
        assert any("listening on" in line for line in ready if line.startswith("STATUS="))

        bridge.signal(signal.SIGHUP)
        reloading = notify.recv(4096).decode().split("\n")
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
        assert notify.recv(4096) == b"READY=1"
        for _ in range(4):  # still serving after SIGHUP, on every worker
            assert "NOTIFY_SOCKET" not in php_environment(bridge.url(), full=True)

        bridge.signal(signal.SIGTERM)
        assert notify.recv(4096) == b"STOPPING=1"
        assert bridge.process.wait(30) == 0
    log = stopped_log(bridge)
    assert "SIGHUP" in log and "starting a new one" not in log


def read_unit(path):
    """The [Service] settings of a systemd unit file, as a dict (last value wins)."""
    settings, section = {}, None
    for line in open(path):
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#") and section == "Service":
            key, _, setting = line.partition("=")
            settings[key] = setting
    return settings


def test_shipped_systemd_unit_runs_the_bridge_as_systemd_would(tmp_path):
    unit = read_unit(os.path.join(REPO, "conf", "greenbridge.service"))
    assert unit["Type"] == "notify"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["User"] == "greenbridge"
    assert "MemoryDenyWriteExecute" not in unit  # PHP's JIT needs it off

    # Run ExecStart as systemd would, with the paths moved to this checkout.
    config = open(os.path.join(REPO, "conf", "bridge.conf")).read()
    config = config.replace("ws-port = 8080", "ws-port = 0")
    (tmp_path / "bridge.conf").write_text(config)
    command = unit["ExecStart"].replace("/opt/greenbridge", REPO).replace(
        "/etc/greenbridge/bridge.conf", str(tmp_path / "bridge.conf")).split()
    notify_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(15)
        bridge = Bridge(command[1:], env={"NOTIFY_SOCKET": notify_path},
                        cwd=unit["WorkingDirectory"].replace("/opt/greenbridge", REPO),
                        command=command[:1])
        try:
            bridge.wait_listening()
            assert b"READY=1" in notify.recv(4096)
            with connect(bridge.url()) as ws:
                ws.send(b"unit")
                assert ws.recv(timeout=10) == b"unit"
            reload = unit["ExecReload"].replace("$MAINPID", str(bridge.process.pid)).split()
            subprocess.run(reload, check=True, timeout=10)
            assert notify.recv(4096).startswith(b"RELOADING=1")
            assert notify.recv(4096) == b"READY=1"
            assert bridge.stop() == 0
            assert notify.recv(4096) == b"STOPPING=1"
        finally:
            bridge.kill()


def test_one_scrape_shows_every_workers_numbers(start_bridge):
    bridge = start_bridge("--workers", "2", "--admin-port", "0")
    port = admin_port(bridge)
    with ExitStack() as stack:
        per_back_port = {}
        for _ in range(40):
            back_port = held_php_environment(stack, bridge.url())[1]["WSS_TCP_PORT"]
            per_back_port[back_port] = per_back_port.get(back_port, 0) + 1
            if len(per_back_port) == 2 and sum(per_back_port.values()) >= 4:
                break
        assert len(per_back_port) == 2, "one worker served every connection"
        during = scrape(port)
        assert value(during, "greenbridge_workers_answering") == 2
        open_per_worker = sorted(value(during, "greenbridge_connections_open", worker=worker)
                                 for worker in ("1", "2"))
        assert open_per_worker == sorted(per_back_port.values())
        assert value(during, "greenbridge_php_processes", worker="1") + \
            value(during, "greenbridge_php_processes", worker="2") == sum(per_back_port.values())
        assert http_get(port, "/readyz") == (200, "ready\n")
    opened = sum(per_back_port.values())
    wait_until(lambda: len(access_lines(bridge.log)) == opened)
    after = scrape(port)
    assert sum(value(after, "greenbridge_connections_total", code="1000", worker=worker)
               for worker in ("1", "2")) == opened
    assert bridge.stop() == 0


def test_certificate_expiry_metric_follows_the_served_certificate():
    from greenbridge.metrics import Metrics
    from greenbridge.tls.holder import CertificateHolder

    metrics, holder = Metrics(), CertificateHolder()
    metrics.watch_certificate(holder)

    def expiry():
        samples = scrape_text(metrics.render().decode())
        return value(samples, "greenbridge_tls_certificate_expiry_timestamp_seconds")

    def not_after(certificate_pem):
        """The expiry written in the certificate itself."""
        return x509.load_pem_x509_certificate(certificate_pem).not_valid_after_utc.timestamp()

    assert math.isnan(expiry())  # before any certificate is loaded
    ca = make_ca()
    for days in (30, 60):  # a reload changes the expiry
        served = ca.issue("localhost", ["localhost"], not_after=NOW + days * DAY)
        holder.install(served.cert_pem, served.key_pem, source="%d days" % days)
        assert expiry() == not_after(served.cert_pem)


def test_parallel_scrapes_of_two_workers_all_answer(start_bridge):
    """8 scrapes at once, 5 times: each is a 200 with both workers' numbers in it."""
    bridge = start_bridge("--workers", "2", "--admin-port", "0")
    port = admin_port(bridge)
    wait_until(lambda: bridge.log.count("listening on ws://") == 2, timeout=30)
    for _ in range(5):
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: http_get(port, "/metrics"), range(8)))
        assert [status for status, _ in answers] == [200] * 8
        for _, text in answers:
            samples = {sample.name: sample.value
                       for family in text_string_to_metric_families(text)
                       for sample in family.samples}
            assert samples["greenbridge_workers_answering"] == 2
    bridge.assert_serves()
    assert "Traceback" not in stopped_log(bridge)


def test_application_close_codes_are_counted_in_buckets(start_bridge):
    """Clients pick close codes in 3000-4999: one series per range, not per code."""
    bridge = start_bridge("--admin-port", "0")
    port = admin_port(bridge)
    client_codes = [4321, 4999, 3000, 3999, 1001]
    for code in client_codes:
        with connect(bridge.url()) as ws:
            ws.send(b"x")
            assert ws.recv(timeout=10) == b"x"
            ws.close(code=code)
    wait_until(lambda: bridge.log.count("greenbridge.access") == len(client_codes))
    codes = {labels: count for (name, labels), count in scrape(port).items()
             if name == "greenbridge_connections_total"}
    assert codes == {(("code", "4xxx"),): 2, (("code", "3xxx"),): 2, (("code", "1001"),): 1}


def test_head_on_the_admin_endpoints_has_no_body(start_bridge):
    bridge = start_bridge("--admin-port", "0")
    port = admin_port(bridge)
    for path, status in [("/metrics", 200), ("/healthz", 200), ("/readyz", 200), ("/x", 404)]:
        assert_head_matches_get(port, path, status)


def test_idle_admin_connections_are_closed_after_the_handshake_timeout(start_bridge):
    bridge = start_bridge("--admin-port", "0", "--handshake-timeout", "1")
    port = admin_port(bridge)
    silent = socket.create_connection(("127.0.0.1", port), timeout=15)
    half_sent = socket.create_connection(("127.0.0.1", port), timeout=15)
    half_sent.sendall(b"GET /hea")
    kept_alive = socket.create_connection(("127.0.0.1", port), timeout=15)
    kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    with silent, half_sent, kept_alive:
        started = time.monotonic()
        assert read_until_closed(silent) == b""
        assert read_until_closed(half_sent) == b""
        assert read_until_closed(kept_alive).endswith(b"\r\n\r\nok\n")  # answered, then dropped
        assert time.monotonic() - started < 1 + 10  # the timeout, with slack for a busy machine
    bridge.wait_for_log(r"admin client 127\.0\.0\.1:\d+: no complete request within 1s")
    assert http_get(port, "/healthz") == (200, "ok\n")


def test_a_flood_of_idle_admin_connections_leaves_healthz_answering(start_bridge):
    """200 idle sockets against a descriptor limit that leaves room for 40 more."""
    bridge = start_bridge("--admin-port", "0")
    port = admin_port(bridge)
    server = psutil.Process(bridge.process.pid)
    server.rlimit(resource.RLIMIT_NOFILE, (server.num_fds() + 40, server.rlimit(resource.RLIMIT_NOFILE)[1]))
    crowd = []
    try:
        for _ in range(200):
            crowd.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        for _ in range(3):
            assert http_get(port, "/healthz") == (200, "ok\n")
        bridge.wait_for_log(r"16 admin requests pending: dropping the oldest")
        wait_closed(crowd, 10, left_open=16)
    finally:
        for sock in crowd:
            sock.close()
    bridge.assert_serves()
    log = stopped_log(bridge)
    assert "Traceback" not in log and "Too many open files" not in log


def test_malformed_admin_request_is_one_line_not_a_traceback(start_bridge):
    bridge = start_bridge("--admin-port", "0")
    port = admin_port(bridge)
    many_headers = b"".join(b"X-H%d: v\r\n" % n for n in range(150))
    response = raw_http(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many_headers + b"\r\n")
    assert response.startswith("HTTP/1.1 400 ")
    bridge.wait_for_log(r"more than 100 headers")
    assert http_get(port, "/healthz") == (200, "ok\n")
    assert "Traceback" not in stopped_log(bridge)
