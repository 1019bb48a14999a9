"""Message modes end to end: a real client, the bridge, and PHP written with Greenbridge.php."""

import json
import os
import re
import subprocess
from urllib.parse import quote

import psutil
import pytest
from websockets.sync.client import connect

from support import (LIBRARY_ECHO_PHP, LIBRARY_PHP, REPO, RawClient, closed_with, frame,
                     php_lib_path, wait_until)

EXAMPLES = os.path.join(REPO, "conf", "examples")

UTF8_EDGES = ["", "\x00", "é", "€", "𝄞", "\ud7ff", "\ue000", "\uffff", "\U0010ffff",
              "mixed ascii é € 𝄞 \U0010ffff end"]


def library_bridge(start_bridge, mode, *flags):
    return start_bridge("--message-mode", mode, *flags, script=LIBRARY_PHP)


# -- framed ------------------------------------------------------------------

def test_framed_echo_keeps_types_and_utf8_edges(start_bridge):
    bridge = library_bridge(start_bridge, "framed")
    with connect(bridge.url()) as ws:
        for text in UTF8_EDGES:
            ws.send(text)
            assert ws.recv(timeout=10) == text
        for data in (b"", b"\x00", b"\xff\xfe\xfd", "é".encode()):
            ws.send(data)
            assert ws.recv(timeout=10) == data  # bytes: a binary message came back


def test_framed_sixteen_mib_messages_both_types(start_bridge):
    bridge = library_bridge(start_bridge, "framed")
    binary = os.urandom(16 * 1024 * 1024)
    text = "é€𝄞" * (16 * 1024 * 1024 // 9) + "x"
    assert len(text.encode()) == 16 * 1024 * 1024
    with connect(bridge.url(), max_size=None) as ws:
        ws.send(binary)
        assert ws.recv(timeout=60) == binary
        ws.send(text)
        assert ws.recv(timeout=60) == text


def test_framed_fragmented_client_message_reaches_php_whole(start_bridge):
    bridge = library_bridge(start_bridge, "framed")
    client = RawClient(bridge.port)
    try:
        parts = ["hé".encode()[:2], "é".encode()[1:] + b"ll", b"", b"o"]
        client.sock.sendall(frame(0x1, parts[0], fin=False) + frame(0x0, parts[1], fin=False)
                            + frame(0x9, b"p") + frame(0x0, parts[2], fin=False)
                            + frame(0x0, parts[3]))
        assert client.read_frame() == (0xA, b"p")
        assert client.read_frame() == (0x1, "héllo".encode())  # one text frame, whole
    finally:
        client.close()


def test_php_gets_the_client_close_code_and_reason(start_bridge, tmp_path):
    bridge = library_bridge(start_bridge, "framed")
    report = tmp_path / "close.json"
    with connect(bridge.url("/?do=report_close&file=%s" % report)) as ws:
        ws.close(4001, "gone fishing")
    bridge.wait_for_log(r"greenbridge.access: .* close=4001 ")  # PHP has exited by then
    assert json.loads(report.read_text()) == {"code": 4001, "reason": "gone fishing",
                                              "connected": False}


def test_php_learns_1006_when_the_client_vanishes(start_bridge, tmp_path):
    bridge = library_bridge(start_bridge, "framed")
    report = tmp_path / "close.json"
    client = RawClient(bridge.port, "/?do=report_close&file=%s" % report)
    client.close()
    bridge.wait_for_log(r"greenbridge.access: .* close=1006 ")
    assert json.loads(report.read_text())["code"] == 1006


@pytest.mark.parametrize("code,reason", [(1000, ""), (4002, "done here"), (1008, "é" * 40)])
def test_php_close_code_and_reason_reach_the_client(start_bridge, code, reason):
    bridge = library_bridge(start_bridge, "framed")
    with connect(bridge.url("/?do=close&code=%d&reason=%s" % (code, quote(reason)))) as ws:
        ws.send("close now")
        assert closed_with(ws) == (code, reason)


# Each bad frame and what is logged of it: test_modes.py (test_framed_errors_are_1011_and_say_
# what_was_wrong); here one, through a server (and one over the limit, below).
@pytest.mark.parametrize("hexdata,complaint", [
    ("0700000000", "unknown type 0x07"),
], ids=["type"])
def test_bad_frames_from_php_close_1011_and_are_logged(start_bridge, hexdata, complaint):
    bridge = library_bridge(start_bridge, "framed")
    with connect(bridge.url("/?do=raw_bytes&hex=" + hexdata)) as ws:
        assert closed_with(ws) == (1011, "PHP protocol error")
    bridge.wait_for_log(re.escape(complaint))
    bridge.wait_no_php()


def test_good_frames_before_a_bad_one_are_delivered(start_bridge):
    bridge = library_bridge(start_bridge, "framed")
    with connect(bridge.url("/?do=raw_bytes&hex=01000000026f6b" + "0900000000")) as ws:
        assert ws.recv(timeout=10) == "ok"
        assert closed_with(ws) == (1011, "PHP protocol error")


def test_framed_php_frame_over_max_payload_is_1011(start_bridge):
    bridge = library_bridge(start_bridge, "framed", "--max-payload-size", "1000")
    with connect(bridge.url("/?do=raw_bytes&hex=02000003e9")) as ws:
        assert closed_with(ws) == (1011, "PHP protocol error")
    bridge.wait_for_log("binary frame of 1001 bytes")


# -- line --------------------------------------------------------------------

def test_line_mode_one_message_per_line(start_bridge):
    bridge = library_bridge(start_bridge, "line")
    with connect(bridge.url()) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo"
        ws.send(b"\xff\xfe")
        assert ws.recv(timeout=10) == b"\xff\xfe"  # not UTF-8: binary
        ws.send(b"ascii bytes")
        assert ws.recv(timeout=10) == "ascii bytes"  # valid UTF-8: text
        ws.send("")
        assert ws.recv(timeout=10) == ""
        ws.send("two\nlines")  # a newline inside a message splits it for PHP
        assert [ws.recv(timeout=10), ws.recv(timeout=10)] == ["two", "lines"]


def test_line_mode_echo_of_shipped_example_handles_many_messages(start_bridge):
    bridge = start_bridge("--message-mode", "line", script=LIBRARY_ECHO_PHP)
    with connect(bridge.url()) as ws:
        for number in range(200):
            ws.send("message %d" % number)
        assert [ws.recv(timeout=10) for _ in range(200)] == ["message %d" % n for n in range(200)]


def test_line_longer_than_max_payload_closes_1009(start_bridge):
    bridge = start_bridge("--message-mode", "line", "--max-payload-size", "100")
    with connect(bridge.url()) as ws:
        ws.send("x" * 100)  # scenario.php echoes bytes: the line comes back as it went
        assert ws.recv(timeout=10) == "x" * 100
    with connect(bridge.url("/?do=flood&chunks=1")) as ws:
        assert closed_with(ws)[0] == 1009
    bridge.wait_for_log("PHP wrote a line over 100 bytes")


# -- raw ---------------------------------------------------------------------

def test_raw_mode_through_the_library(start_bridge):
    bridge = library_bridge(start_bridge, "raw")
    with connect(bridge.url()) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo".encode()  # raw: PHP's bytes go out binary


# -- the library's API ---------------------------------------------------------

def test_library_reports_the_request(start_bridge):
    bridge = library_bridge(start_bridge, "framed")
    with connect(bridge.url("/api/path?do=api"), additional_headers={"X-Test": "tést"},
                 subprotocols=["chat.v2"]) as ws:
        info = json.loads(ws.recv(timeout=10))
    assert info.pop("id") and info == {
        "mode": "framed", "subprotocol": "chat.v2", "path": "/api/path",
        "path_prefixed": "/api/path", "missing": None, "header": "tést",
        "headers_decoded": True, "only_wss": True, "connected": True, "stream": True}


@pytest.mark.parametrize("mode", ["framed", "line"])
def test_library_send_functions_choose_types(start_bridge, mode):
    bridge = library_bridge(start_bridge, mode)
    with connect(bridge.url("/?do=types")) as ws:
        received = [ws.recv(timeout=10) for _ in range(5)]
    if mode == "framed":
        assert received == ["text", b"\x00binary", "auto é", b"\xff\xfe", b"forced binary"]
    else:  # line mode: the bridge types each line by its content
        assert received == ["text", "\x00binary", "auto é", b"\xff\xfe", "forced binary"]


def test_library_receive_timeout_returns_null_while_connected(start_bridge):
    bridge = library_bridge(start_bridge, "framed")
    with connect(bridge.url("/?do=timeout")) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"message": None, "connected": True,
                                                   "waited": True}


def test_library_receive_returns_null_when_a_signal_interrupts_it(start_bridge):
    bridge = library_bridge(start_bridge, "framed")
    with connect(bridge.url("/?do=interrupted")) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"message": None, "connected": True}
        ws.send("after the signal")
        assert ws.recv(timeout=10) == "next: after the signal"


def test_library_receive_waits_on_a_non_blocking_stream(start_bridge):
    bridge = library_bridge(start_bridge, "framed")
    with connect(bridge.url("/?do=nonblocking")) as ws:
        # PHP logs that it calls receive(); once it then sleeps in the kernel, it is
        # waiting in there (a receive() that does not wait has returned by then).
        bridge.wait_for_log(r"stderr: receiving$")
        php = bridge.php_processes()
        assert len(php) == 1, "PHP ended: receive() did not wait"
        wait_until(lambda: php[0].status() == psutil.STATUS_SLEEPING, what="PHP waiting")
        ws.send("late")
        assert ws.recv(timeout=10) == "got: late"


def test_library_works_without_the_sockets_extension(start_bridge, tmp_path):
    php = tmp_path / "php"
    php.write_text("#!/bin/sh\nexec php -n \"$@\"\n")  # -n: no php.ini, no shared extensions
    php.chmod(0o755)
    bridge = start_bridge("--message-mode", "framed", script=LIBRARY_PHP, php=str(php))
    with connect(bridge.url("/?do=sockets_extension")) as ws:
        assert ws.recv(timeout=10) == "sockets extension: no"
        for message in ("text é", b"\x00binary"):
            ws.send(message)
            assert ws.recv(timeout=10) == message


def test_library_stream_works_with_stream_select(start_bridge):
    bridge = library_bridge(start_bridge, "framed")
    with connect(bridge.url("/?do=select")) as ws:
        for word in ("one", "two", "three"):
            ws.send(word)
        assert json.loads(ws.recv(timeout=10)) == ["one", "two", "three"]


def test_library_refuses_invalid_utf8_text(start_bridge):
    bridge = library_bridge(start_bridge, "framed")
    with connect(bridge.url("/?do=bad_text")) as ws:
        assert ws.recv(timeout=10) == "refused: a text message must be valid UTF-8"


def test_php_lib_flag_prints_the_library_path():
    path = php_lib_path()
    assert os.path.basename(path) == "Greenbridge.php" and os.path.isfile(path)
    lint = subprocess.run(["php", "-l", path], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    composer = json.loads(open(os.path.join(os.path.dirname(path), "composer.json")).read())
    assert composer["autoload"]["classmap"] == ["Greenbridge.php"]


# -- the shipped examples --------------------------------------------------------

def test_json_rpc_example(start_bridge):
    bridge = start_bridge("--message-mode", "framed", script=os.path.join(EXAMPLES, "rpc.php"))
    with connect(bridge.url("/chat")) as ws:
        assert json.loads(ws.recv(timeout=10))["path"] == "/chat"
        ws.send(json.dumps({"id": 7, "method": "add", "params": [2, 3]}))
        assert json.loads(ws.recv(timeout=10)) == {"id": 7, "result": 5}
        ws.send("not json")
        assert "error" in json.loads(ws.recv(timeout=10))
        ws.send(json.dumps({"id": 8, "method": "bye"}))
        assert closed_with(ws) == (1000, "bye")


def test_ticker_example_pushes_until_paused(start_bridge):
    bridge = start_bridge("--message-mode", "framed", script=os.path.join(EXAMPLES, "ticker.php"))
    with connect(bridge.url("/?interval=0.05")) as ws:
        ticks = [json.loads(ws.recv(timeout=10))["tick"] for _ in range(3)]
        assert ticks == [1, 2, 3]
        ws.send("pause")
        for _ in range(1000):  # ticks sent before the pause arrived come first
            if "paused" in json.loads(ws.recv(timeout=10)):
                break
        else:
            raise AssertionError("the ticker did not pause")
        ws.send("resume")
        for _ in range(10):  # "resumed", then ticks
            message = json.loads(ws.recv(timeout=10))
            if "tick" in message:
                break
        assert message["tick"] > 3, message
