"""Handshake rules: routes, subprotocol selection and origin checks; refusals spawn no PHP."""

import json

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from greenbridge.cli import parse_config
from support import (LIBRARY_PHP, LIST_FORMS, SCENARIO_PHP, access_lines,
                     assert_no_other_connection_ran, config_refusal, list_option_sources,
                     php_environment, run_cli, stopped_log)


def refused(bridge, path="/", **options):
    with pytest.raises(InvalidStatus) as refusal:
        with connect(bridge.url(path), **options):
            pass
    return refusal.value.response.status_code, refusal.value.response.body.decode()


# -- routes ------------------------------------------------------------------

def test_route_gets_its_script_and_mode_others_the_default(start_bridge):
    bridge = start_bridge("--route", "/api=%s,mode=framed" % LIBRARY_PHP)
    with connect(bridge.url("/api?do=api")) as ws:
        assert json.loads(ws.recv(timeout=10))["mode"] == "framed"  # library.php answered
    environment = php_environment(bridge.url("/elsewhere"))
    assert environment["WSS_MESSAGE_MODE"] == "raw"
    assert environment["WSS_REQUEST_PATH"] == "/elsewhere"


def test_without_script_unrouted_paths_get_404(start_bridge):
    bridge = start_bridge("--route", "/only=%s" % SCENARIO_PHP, script=None)
    assert php_environment(bridge.url("/only"))["WSS_REQUEST_PATH"] == "/only"
    assert refused(bridge, "/other")[0] == 404
    assert refused(bridge, "/only/")[0] == 404  # paths match exactly
    bridge.wait_for_log("404 Not Found")
    assert len(access_lines(stopped_log(bridge))) == 1  # /only, not the refused two


def test_route_subprotocols_replace_the_global_list(start_bridge):
    bridge = start_bridge("--subprotocol", "global.v1",
                          "--route", "/chat=%s,subprotocol=chat.v2,subprotocol=chat.v1"
                          % SCENARIO_PHP)
    # (php_environment checks that the client was given the subprotocol PHP was told.)
    environment = php_environment(bridge.url("/chat"), subprotocols=["chat.v1", "chat.v2"])
    assert environment["WSS_SUBPROTOCOL"] == "chat.v1"
    assert refused(bridge, "/chat", subprotocols=["global.v1"])[0] == 400
    environment = php_environment(bridge.url("/"), subprotocols=["global.v1"])
    assert environment["WSS_SUBPROTOCOL"] == "global.v1"


def test_routes_from_config_file_and_environment(tmp_path):
    config_file = tmp_path / "bridge.conf"
    config_file.write_text('php-executable = php\nroute = ["/a=%s,mode=framed", "/b=%s"]\n'
                           % (SCENARIO_PHP, LIBRARY_PHP))
    config = parse_config(["-c", str(config_file)], environment={})
    assert [(r.path, r.script, r.message_mode) for r in config.routes] == [
        ("/a", SCENARIO_PHP, "framed"), ("/b", LIBRARY_PHP, None)]
    assert config.script is None
    config = parse_config(["-e", "php"], environment={
        "WSS_CONFIG_ROUTES": '["/c=%s,mode=line,subprotocol=x"]' % SCENARIO_PHP,
        "WSS_CONFIG_MESSAGE_MODE": "framed", "WSS_CONFIG_SUBPROTOCOLS": "[y, z]"})
    assert [(r.path, r.message_mode, r.subprotocols) for r in config.routes] == [
        ("/c", "line", ("x",))]
    assert config.message_mode == "framed" and config.subprotocols == ("y", "z")


@pytest.mark.parametrize("args,complaint", [
    (["--route", "chat=x.php"], "--route: invalid route"),
    (["--route", "/chat=%s,mode=fancy" % SCENARIO_PHP], "--route: invalid route"),
    (["--route", "/chat=/no/such.php"], "--route /chat: '/no/such.php' is not a file"),
    (["--message-mode", "lines", "-s", SCENARIO_PHP], "--message-mode: invalid message mode"),
    (["--subprotocol", "a b", "-s", SCENARIO_PHP], "--subprotocol: invalid subprotocol"),
    (["--allow-origin", "https://a.com/path", "-s", SCENARIO_PHP], "--allow-origin: invalid"),
    (["--allow-origin", "*.*.com", "-s", SCENARIO_PHP], "--allow-origin: invalid"),
    (["--ping-timeout", "0", "-s", SCENARIO_PHP], "--ping-timeout must be over 0"),
    ([], "--script is required (or at least one --route)"),
])
def test_bad_options_are_refused_saying_which(args, complaint):
    # (test_cli.py runs the command for one refusal of each kind: one line, status 2.)
    assert complaint in config_refusal(["-e", "php", *args])


def test_new_options_are_in_help():
    result = run_cli("--help")
    for text in ("--message-mode", "WSS_CONFIG_MESSAGE_MODE", "--route", "WSS_CONFIG_ROUTES",
                 "--subprotocol", "WSS_CONFIG_SUBPROTOCOLS", "--allow-origin",
                 "WSS_CONFIG_ALLOW_ORIGINS", "--same-origin", "WSS_CONFIG_SAME_ORIGIN",
                 "--ping-interval", "WSS_CONFIG_PING_INTERVAL", "--ping-timeout",
                 "WSS_CONFIG_PING_TIMEOUT", "--php-lib"):
        assert text in result.stdout


# -- subprotocols --------------------------------------------------------------

def test_without_a_list_the_first_offered_subprotocol_is_echoed(start_bridge):
    bridge = start_bridge()
    # (php_environment checks that the client was given the subprotocol PHP was told.)
    environment = php_environment(bridge.url(), subprotocols=["first", "second"])
    assert environment["WSS_SUBPROTOCOL"] == "first"
    assert "WSS_SUBPROTOCOL" not in php_environment(bridge.url())


def test_no_matching_subprotocol_is_400_and_spawns_nothing(start_bridge):
    bridge = start_bridge("--subprotocol", "b")
    status, body = refused(bridge, subprotocols=["a", "x"])
    assert status == 400
    bridge.wait_for_log(r"400 Bad Request \(none of the offered subprotocols \(a, x\)")
    assert_no_other_connection_ran(bridge)


# -- origins -------------------------------------------------------------------

# Which origins each pattern allows: test_origin.py; here one of each answer, through a server.
@pytest.mark.parametrize("origin,allowed", [
    ("https://deep.app.example.com", True),
    ("https://app.example.com.evil.com", False),
])
def test_allow_origin_patterns(start_bridge, origin, allowed):
    bridge = start_bridge("--allow-origin", "*.example.com",
                          "--allow-origin", "http://localhost:3000")
    if allowed:
        assert php_environment(bridge.url(), origin=origin)["WSS_ORIGIN"] == origin
    else:
        assert refused(bridge, origin=origin)[0] == 403
        bridge.wait_for_log("403 Forbidden")
        assert_no_other_connection_ran(bridge)


def test_same_origin_compares_origin_with_host(start_bridge):
    bridge = start_bridge("--same-origin")
    own = "http://127.0.0.1:%d" % bridge.port
    assert php_environment(bridge.url(), origin=own)["WSS_ORIGIN"] == own
    assert refused(bridge, origin="http://127.0.0.1:1")[0] == 403
    assert refused(bridge, origin="https://elsewhere.example")[0] == 403


@pytest.mark.parametrize("form", LIST_FORMS)
def test_list_options_take_comma_separated_values_from_environment_and_config_file(
        start_bridge, tmp_path, form):
    flags, environment = list_option_sources(form, {
        ("allow-origin", "WSS_CONFIG_ALLOW_ORIGINS"): ["https://a.example.com",
                                                       "https://b.example.com"],
        ("subprotocol", "WSS_CONFIG_SUBPROTOCOLS"): ["first.v1", "second.v1"],
        ("pass-env", "WSS_CONFIG_PASS_ENV"): ["GREENBRIDGE_ONE", "GREENBRIDGE_TWO"],
        ("trusted-proxy", "WSS_CONFIG_TRUSTED_PROXIES"): ["192.0.2.1", "127.0.0.1"],
    }, tmp_path)
    environment.update(GREENBRIDGE_ONE="1", GREENBRIDGE_TWO="2", GREENBRIDGE_THREE="3")
    bridge = start_bridge(*flags, env=environment)
    for origin in ("https://a.example.com", "https://b.example.com"):
        env = php_environment(bridge.url(), full=True, origin=origin, subprotocols=["second.v1"],
                              additional_headers={"X-Real-IP": "203.0.113.7"})
        assert env["WSS_SUBPROTOCOL"] == "second.v1"
        assert env["WSS_ORIGIN"] == origin
        assert env["GREENBRIDGE_ONE"] == "1" and env["GREENBRIDGE_TWO"] == "2"
        assert "GREENBRIDGE_THREE" not in env
        assert env["WSS_CLIENT_IP"] == "203.0.113.7"  # 127.0.0.1, the second proxy, is believed
    assert refused(bridge, origin="https://c.example.com")[0] == 403
    bridge.assert_serves()


def test_requests_without_origin_are_not_browsers_and_pass(start_bridge):
    bridge = start_bridge("--allow-origin", "https://only.example")
    assert "WSS_ORIGIN" not in php_environment(bridge.url())
