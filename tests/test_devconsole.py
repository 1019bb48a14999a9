"""--dev-console in a real headless Chromium: the page connects through the bridge to PHP."""

import json
import urllib.error
import urllib.request

import jwt
import pytest
from cent import Client, PublishRequest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from websockets.sync.client import connect

from support import admin_port, assert_head_matches_get, chat_conf, stopped_log

CHAT_API_KEY, CHAT_TOKEN_SECRET = chat_conf("api-key"), chat_conf("token-secret")


def log_entries(driver):
    return [entry.text for entry in driver.find_elements(By.CSS_SELECTOR, "#log .entry")]


def wait_for_entry(driver, text, timeout=30):
    WebDriverWait(driver, timeout).until(
        lambda d: any(text in entry for entry in log_entries(d)),
        message="no %r in the console log" % text)


def test_console_page_echoes_through_php(start_bridge, chromium, tmp_path):
    # The first-screen configuration: conf/echo.php in framed mode.
    bridge = start_bridge("-c", "conf/bridge.conf", "--dev-console", script=None)
    assert "DEV CONSOLE ON" in bridge.log
    chromium.get("http://127.0.0.1:%d/" % bridge.port)
    url_field = chromium.find_element(By.ID, "url")
    assert url_field.get_attribute("value") == "ws://127.0.0.1:%d/" % bridge.port
    url_field.clear()
    url_field.send_keys("ws://127.0.0.1:%d/chat?room=1" % bridge.port)
    chromium.find_element(By.ID, "connect").click()
    wait_for_entry(chromium, "open")

    message = chromium.find_element(By.ID, "message")
    message.clear()
    message.send_keys("héllo from chromium")
    chromium.find_element(By.ID, "send-text").click()
    wait_for_entry(chromium, '← text "héllo from chromium"')
    chromium.find_element(By.ID, "disconnect").click()
    wait_for_entry(chromium, "closed: code 1000")
    chromium.save_screenshot(str(tmp_path / "dev-console.png"))
    print("screenshot:", tmp_path / "dev-console.png")

    entries = log_entries(chromium)
    assert all(entry[:2].isdigit() and entry[2] == ":" for entry in entries)  # timestamps
    bridge.wait_for_log(r"greenbridge\.access: .* /chat\?room=1 .* in=20 out=20 close=1000")


def test_console_is_off_by_default(start_bridge):
    bridge = start_bridge()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen("http://127.0.0.1:%d/" % bridge.port, timeout=10)
    assert refused.value.code == 426
    assert "DEV CONSOLE" not in stopped_log(bridge)


def test_head_of_the_console_page_has_no_body(start_bridge):
    bridge = start_bridge("--dev-console")
    assert_head_matches_get(bridge.port, "/", 200)


def test_console_watches_the_channels_of_a_pasted_token(start_bridge, chromium, tmp_path):
    # conf/chat.conf: the chat on /chat, a subscribe route on /live, tokens, the server API.
    bridge = start_bridge("-c", "conf/chat.conf", "--dev-console", "--admin-port", "0",
                          script=None)
    api = Client("http://127.0.0.1:%d/api" % admin_port(bridge), CHAT_API_KEY)
    chromium.get("http://127.0.0.1:%d/" % bridge.port)
    assert chromium.find_element(By.ID, "watch-url").get_attribute("value") == \
        "ws://127.0.0.1:%d/live" % bridge.port

    forged = jwt.encode({"sub": "dev", "channels": ["chat:lobby"]}, "not-" + CHAT_TOKEN_SECRET,
                        algorithm="HS256")
    chromium.find_element(By.ID, "watch-token").send_keys(forged)
    chromium.find_element(By.ID, "watch").click()
    wait_for_entry(chromium, "watching channels chat:lobby as \"dev\"")
    wait_for_entry(chromium, "watch closed: code 1006")  # the browser is not shown the 401
    bridge.wait_for_log(r"GET /live from 127\.0\.0\.1: 401 Unauthorized \(bad token signature\)")

    token = jwt.encode({"sub": "dev", "channels": ["chat:lobby"]}, CHAT_TOKEN_SECRET,
                       algorithm="HS256")
    chromium.find_element(By.ID, "watch-token").clear()
    chromium.find_element(By.ID, "watch-token").send_keys(token)
    chromium.find_element(By.ID, "watch").click()
    wait_for_entry(chromium, "watch open")

    # What a chat client says in the room and what the API publishes both reach the watch.
    with connect(bridge.url("/chat?name=ann")) as ann:
        assert json.loads(ann.recv(timeout=10)) == {"joined": "chat:lobby", "user": "ann"}
        ann.send("hi from ann")
        wait_for_entry(chromium, "\u21d0 text " + json.dumps(json.dumps(
            {"user": "ann", "text": "hi from ann"}, separators=(",", ":"))))
    api.publish(PublishRequest(channel="chat:lobby", data={"text": "from the API"}))
    wait_for_entry(chromium, "\u21d0 text " + json.dumps('{"text":"from the API"}'))
    chromium.save_screenshot(str(tmp_path / "dev-console-watch.png"))
    print("screenshot:", tmp_path / "dev-console-watch.png")
    chromium.find_element(By.ID, "unwatch").click()
    wait_for_entry(chromium, "watch closed: code 1000")
    bridge.wait_for_log(r"/live\?token=\.\.\. .* close=1000 .*php=none")
