"""--dev-console in a real headless Chromium: the page connects through the bridge to PHP."""

import shutil
import urllib.error
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from support import assert_head_matches_get, stopped_log

# Chromium must not try to reach the internet (closed here) nor need a GPU or sandbox (root).
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--window-size=1100,800"]


@pytest.fixture
def chromium(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS + ["--user-data-dir=%s" % (tmp_path / "profile")]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


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
