"""Log forgery: nothing a client (or a PHP script repeating it) sends becomes a log line of its own.

Each test attacks a real server with hand-written bytes and reads the log the server wrote,
split wherever some reader splits lines (``str.splitlines``: LF, CR, VT, FF, NEL, U+2028...).
"""

import json
import logging
import re
import struct
from urllib.parse import quote

import pytest
from websockets.sync.client import connect

from greenbridge.logs import JsonFormatter
from support import RawClient, frame, raw_http, stopped_log, upgrade_request

FORGED_ID = "11111111-2222-4333-8444-555555555555"
FORGED_LINE = ("2026-12-03 10:00:00,000 INFO greenbridge.access: [%s] 10.0.0.1:4242 /admin "
               "0.001s in=0 out=0 close=1000 'bye' php=exit status 0" % FORGED_ID)
# One entry of the text format: time, level, logger, and the connection ID if it has one.
TEXT_ENTRY = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: "
                        r"(\[([0-9a-f-]{36})\] )?")
# Characters no log line may hold raw: C0 and C1 controls (the LF that ends a line aside),
# DEL, the Unicode line and paragraph separators.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")

both_formats = pytest.mark.parametrize("log_format", ["text", "json"])


def assert_every_line_is_the_servers_own(bridge, log_format):
    """Stops the server first: a forged line written late is read too."""
    output = stopped_log(bridge)
    for line in output.splitlines():
        assert not line.startswith(FORGED_LINE[:23]), "a forged line: %r" % line
        if log_format == "json":
            entry = json.loads(line)
            assert entry.get("connection_id") != FORGED_ID, line
        else:
            entry = TEXT_ENTRY.match(line)
            assert entry, "a line the server did not write: %r" % line
            assert entry.group(2) != FORGED_ID, line
    assert not RAW_CONTROL.search(output), RAW_CONTROL.search(output)


def message_of(line, log_format):
    return json.loads(line)["message"] if log_format == "json" else line


@both_formats
def test_encoded_line_breaks_in_the_path_and_close_reason_forge_no_line(start_bridge, log_format):
    bridge = start_bridge("--log-format", log_format)
    client = RawClient(bridge.port, "/x%0A" + quote(FORGED_LINE) + "%C2%85" + quote(FORGED_LINE))
    client.sock.sendall(frame(0x8, struct.pack("!H", 1000) + b"bye\n" + FORGED_LINE[:100].encode()))
    assert client.read_close_code() == 1000
    client.close()
    access = bridge.wait_for_log(".*greenbridge.access.*").group()
    bridge.assert_serves()
    assert_every_line_is_the_servers_own(bridge, log_format)
    message = message_of(access, log_format)
    assert "/x\\n2026-12-03 10:00:00,000 INFO" in message
    assert "exit status 0\\x852026-12-03" in message
    assert "'bye\\n2026-12-03" in message


@both_formats
def test_control_bytes_in_a_refused_request_reach_the_log_escaped(start_bridge, log_format):
    bridge = start_bridge("--log-format", log_format, "--subprotocol", "chat")
    request = upgrade_request(
        "/\x1b[2K\x1b[1Gforged",
        extra=b"Sec-WebSocket-Protocol: x\x0bA\xe2\x80\xa8B\x1b[31mred\r\n"
              b"User-Agent: agent\x1b[2J\x07\r\n")
    assert raw_http(bridge.port, request).startswith("HTTP/1.1 400 ")
    refusal = bridge.wait_for_log(".*none of the offered subprotocols.*").group()
    bridge.assert_serves()
    assert_every_line_is_the_servers_own(bridge, log_format)
    message = message_of(refusal, log_format)
    assert "/\\x1b[2K\\x1b[1Gforged" in message
    assert "(x\\x0bA\\u2028B\\x1b[31mred)" in message


@both_formats
def test_php_logging_its_clients_message_forges_no_line(start_bridge, log_format):
    bridge = start_bridge("--log-format", log_format)
    with connect(bridge.url("/?do=log_message")) as ws:
        ws.send(b"ok\r\x1b[2K" + FORGED_LINE.encode() + "\u2028\x85end".encode())
        logged = bridge.wait_for_log(".*stderr: ok.*").group()
    bridge.assert_serves()
    assert_every_line_is_the_servers_own(bridge, log_format)
    assert message_of(logged, log_format).endswith(
        "stderr: ok\\r\\x1b[2K%s\\u2028\\x85end" % FORGED_LINE)


@both_formats
def test_a_client_cannot_choose_the_connection_id_of_a_line(start_bridge, log_format):
    bridge = start_bridge("--log-format", log_format)
    request = upgrade_request("/x").replace(b"GET", ("[%s]" % FORGED_ID).encode(), 1)
    assert raw_http(bridge.port, request).startswith("HTTP/1.1 400 ")
    bridge.wait_for_log(FORGED_ID)
    bridge.assert_serves()
    assert_every_line_is_the_servers_own(bridge, log_format)
    assert len([line for line in bridge.lines if FORGED_ID in line]) == 1


def test_json_lines_take_the_connection_id_from_the_record_never_from_the_text():
    # A message that starts the way connection lines used to ("[<ID>] ...").
    record = logging.LogRecord("greenbridge.app", logging.INFO, __file__, 1, "[%s] /x from %s",
                               (FORGED_ID, "127.0.0.1"), None)
    entry = json.loads(JsonFormatter().format(record))
    assert "connection_id" not in entry
    assert entry["message"] == "[%s] /x from 127.0.0.1" % FORGED_ID
