"""The chat example (conf/chat.php, chat.conf, chat.html) as the README's tutorial runs it:
the README's command starts a real bridge, real PHP runs the room, the page runs in headless
Chromium tabs, and the README's curl, PyJWT and websockets commands run as printed."""

import json
import os
import subprocess
import sys
import urllib.parse

import jwt
import pytest
from cent import Client, PublishRequest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from websockets.sync.client import connect

from support import PHP, REPO, admin_port, chat_conf, closed_with, output_until, readme_snippet

CHAT_PAGE = os.path.join(REPO, "conf", "chat.html")
PHPCENT = os.path.join(REPO, "tests", "php", "vendor", "phpcent", "Client.php")


@pytest.fixture
def chat_bridge(start_readme_bridge):
    """The README's ``chat-run`` command; its admin port (8081 in chat.conf) any free one."""
    bridge = start_readme_bridge("chat-run", [("conf/chat.conf", "conf/chat.conf --admin-port 0")])
    bridge.admin_port = admin_port(bridge)
    return bridge


class ChatTab:
    """One browser tab with conf/chat.html, opened from disk as the tutorial says."""

    def __init__(self, driver, bridge, **query):
        if driver.current_url not in ("data:,", "about:blank"):
            driver.switch_to.new_window("tab")
        self.driver, self.handle = driver, driver.current_window_handle
        query = urllib.parse.urlencode({"bridge": bridge.url("/chat"), **query})
        driver.get("file://%s?%s" % (CHAT_PAGE, query))

    def _here(self):
        self.driver.switch_to.window(self.handle)
        return self.driver

    def join(self, name=None, room=None):
        driver = self._here()
        for field, value in (("name", name), ("room", room)):
            if value is not None:
                driver.find_element(By.ID, field).clear()
                driver.find_element(By.ID, field).send_keys(value)
        driver.find_element(By.ID, "join-button").click()
        return self

    def state(self):
        return self._here().find_element(By.ID, "state").text

    def say(self, text):
        driver = self._here()
        self.wait(lambda: driver.find_element(By.ID, "send").is_enabled(), "the send button")
        driver.find_element(By.ID, "text").send_keys(text)
        driver.find_element(By.ID, "send").click()

    def messages(self):
        """[(user, text)] of the list as shown; notices have no user."""
        return [tuple(item) for item in self._here().execute_script(
            "return Array.from(document.querySelectorAll('#messages li'), function (li) {"
            "  var who = li.querySelector('.user');"
            "  return [who ? who.textContent : '', li.lastChild.textContent]; });")]

    def wait(self, condition, what, timeout=30):
        WebDriverWait(self._here(), timeout).until(lambda driver: condition(), message=what)

    def wait_state(self, text):
        self.wait(lambda: self.state() == text, "state %r (it is %r)" % (text, self.state()))

    def wait_message(self, user, text):
        self.wait(lambda: (user, text) in self.messages(),
                  "%s: %s in %r" % (user, text, self.messages()))


def test_two_tabs_chat_and_another_room_hears_nothing(chat_bridge, chromium, tmp_path):
    ann = ChatTab(chromium, chat_bridge).join("ann")
    ann.wait_state("in chat:lobby as ann")  # subscribed: chat.php says so after subscribe()
    bob = ChatTab(chromium, chat_bridge).join("bob")
    bob.wait_state("in chat:lobby as bob")
    cy = ChatTab(chromium, chat_bridge, room="garden").join("cy")
    cy.wait_state("in chat:garden as cy")

    ann.say("hello bob")
    bob.wait_message("ann", "hello bob")
    ann.wait_message("ann", "hello bob")  # the sender is in the room too
    # A marker of cy's own comes after anything of the lobby's that had reached cy.
    cy.say("anyone here?")
    cy.wait_message("cy", "anyone here?")
    assert cy.messages() == [("cy", "anyone here?")]

    # The web app pushes to the browsers: the real cent client through the server API.
    api = Client("http://127.0.0.1:%d/api" % chat_bridge.admin_port, chat_conf("api-key"))
    api.publish(PublishRequest(channel="chat:lobby", data={"user": "cron", "text": "backup done"}))
    for tab in (ann, bob):
        tab.wait_message("cron", "backup done")
    assert bob.messages() == [("ann", "hello bob"), ("cron", "backup done")]
    chromium.save_screenshot(str(tmp_path / "chat.png"))
    print("screenshot:", tmp_path / "chat.png")
    cy.say("still alone?")
    cy.wait_message("cy", "still alone?")
    assert cy.messages() == [("cy", "anyone here?"), ("cy", "still alone?")]


def test_the_token_names_the_user_and_a_forged_one_starts_no_php(chat_bridge, chromium):
    token = jwt.encode({"sub": "ann"}, chat_conf("token-secret"), algorithm="HS256")
    ann = ChatTab(chromium, chat_bridge, token=token).join("mallory")
    ann.wait_state("in chat:lobby as ann")
    ann.say("it is me")
    ann.wait_message("ann", "it is me")

    forged = jwt.encode({"sub": "ann"}, "not-the-secret-of-chat-conf-0123456789", algorithm="HS256")
    mallory = ChatTab(chromium, chat_bridge, token=forged).join("mallory")
    mallory.wait_message("", "disconnected (code 1006)")  # a browser sees no HTTP status
    chat_bridge.wait_for_log(r"401 .*signature")
    assert mallory.state() == "not connected"
    assert len(chat_bridge.php_processes()) == 1  # ann's, still in the room


def readme_shell(name, bridge):
    """The README's shell snippet NAME run by bash as printed, with this checkout's python
    and the ports the bridge got."""
    text = readme_snippet(name)
    for old, new in ((".venv/bin/python", sys.executable), (":8080/", ":%d/" % bridge.port),
                     (":8081/", ":%d/" % bridge.admin_port)):
        text = text.replace(old, new)
    return subprocess.Popen(["bash", "-c", text], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=REPO)


def run_phpcent_snippet(bridge, tmp_path):
    """The README's phpcent lines, the real phpcent (tests/php/vendor/phpcent) loaded in place
    of Composer's autoloader, with the bridge's admin port."""
    script = tmp_path / "publish.php"
    script.write_text(readme_snippet("chat-phpcent").replace(
        "require 'vendor/autoload.php';", "require '%s';" % PHPCENT).replace(
        ":8081/", ":%d/" % bridge.admin_port))
    return subprocess.run([PHP, str(script)], capture_output=True, timeout=20)


def test_tutorial_listener_curl_and_phpcent_run_as_printed(chat_bridge, tmp_path):
    listener = readme_shell("chat-token", chat_bridge)
    try:
        assert b"Connected to" in output_until(listener, b"Connected to")
        # Subscribed at the upgrade, before the 101: the publications that follow reach it.
        curl = readme_shell("chat-curl", chat_bridge)
        printed = curl.communicate(timeout=20)[0]
        assert printed == b'{"result": {}}'
        assert b'< {"user":"cron","text":"backup done"}' in output_until(listener, b"backup done")
        phpcent = run_phpcent_snippet(chat_bridge, tmp_path)
        assert (phpcent.returncode, phpcent.stdout, phpcent.stderr) == (0, b"", b"")
        assert b'< {"user":"php","text":"hi from PHP"}' in output_until(listener, b"from PHP")
        listener.stdin.write(b"can I talk?\n")
        listener.stdin.flush()
        assert b"1003" in output_until(listener, b"Connection closed")
        assert listener.wait(10) == 0
    finally:
        if listener.poll() is None:
            listener.kill()
    assert chat_bridge.php_processes() == []
    chat_bridge.wait_for_log(r"/live\?token=\.\.\. .* close=1003 .*php=none")


def test_a_room_no_channel_can_be_is_refused_and_bytes_are_not_said(chat_bridge):
    with connect(chat_bridge.url("/chat?room=no%20spaces")) as refused:
        code, reason = closed_with(refused)
    assert code == 1008 and "'chat:no spaces' has a character outside" in reason
    with connect(chat_bridge.url("/chat?name=ann")) as ann:
        assert json.loads(ann.recv(timeout=10)) == {"joined": "chat:lobby", "user": "ann"}
        ann.send(b"\xff bytes")
        ann.send("words")
        assert json.loads(ann.recv(timeout=10)) == {"user": "ann", "text": "words"}
