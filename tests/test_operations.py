"""Running it for real: environment hygiene and structured logs."""

import json

from websockets.sync.client import connect


def test_pass_env_gives_php_only_the_listed_variables(start_bridge):
    bridge = start_bridge("--pass-env", "GREENBRIDGE_KEEP, PATH",
                          env={"GREENBRIDGE_KEEP": "kept", "GREENBRIDGE_DROP": "dropped",
                               "WSS_CONFIG_SECRET": "hidden"})
    with connect(bridge.url("/?do=fullenv")) as ws:
        env = json.loads(ws.recv(timeout=10))
    assert env["GREENBRIDGE_KEEP"] == "kept"
    assert "PATH" in env
    assert "GREENBRIDGE_DROP" not in env and "HOME" not in env
    assert "WSS_CONFIG_SECRET" not in env
    assert env["WSS_REQUEST_QUERY"] == "do=fullenv"


def test_without_pass_env_php_inherits_everything_but_config(start_bridge):
    bridge = start_bridge(env={"GREENBRIDGE_DROP": "inherited", "WSS_CONFIG_PASS_ENV": ""})
    with connect(bridge.url("/?do=fullenv")) as ws:
        env = json.loads(ws.recv(timeout=10))
    assert env["GREENBRIDGE_DROP"] == "inherited"


def test_pass_env_from_the_environment_variable(start_bridge):
    bridge = start_bridge(env={"WSS_CONFIG_PASS_ENV": "GREENBRIDGE_KEEP",
                               "GREENBRIDGE_KEEP": "kept", "GREENBRIDGE_DROP": "dropped"})
    with connect(bridge.url("/?do=fullenv")) as ws:
        env = json.loads(ws.recv(timeout=10))
    assert env["GREENBRIDGE_KEEP"] == "kept" and "GREENBRIDGE_DROP" not in env


def test_json_log_lines_carry_the_connection_id_as_a_field(start_bridge):
    bridge = start_bridge("--log-format", "json")
    with connect(bridge.url("/?do=output")) as ws:
        ws.send(b"x")
        ws.recv(timeout=10)
    bridge.wait_for_log(r'"logger": "greenbridge.access"')
    bridge.stop()
    entries = [json.loads(line) for line in bridge.lines]  # every line is one JSON object
    access = [entry for entry in entries if entry["logger"] == "greenbridge.access"]
    assert len(access) == 1
    connection_id = access[0]["connection_id"]
    assert len(connection_id) == 36
    assert access[0]["message"].startswith("127.0.0.1:")
    stderr_line = [entry for entry in entries if entry["message"] == "stderr: a line on stderr"]
    assert stderr_line[0]["connection_id"] == connection_id
    assert stderr_line[0]["level"] == "WARNING"
    assert any("listening on ws://" in entry["message"] for entry in entries)
