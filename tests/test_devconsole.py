"""--dev-console in a real headless Chromium: the page connects through the bridge to PHP."""

import urllib.error
import urllib.request

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from support import assert_head_matches_get, stopped_log


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
