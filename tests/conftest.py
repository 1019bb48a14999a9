"""The pytest fixtures; the helpers the tests share live in support.py."""

import shutil

import pytest

from support import (NODE_API_KEY, NODE_FLAGS, PHP, REPO, SCENARIO_PHP, Bridge, RedisServer,
                     admin_port, node_ready, readme_command, wait_until)


@pytest.fixture
def start_bridge():
    """start_bridge(*flags, script=..., env=...) -> a listening Bridge; stopped after the test."""
    started = []

    def start(*flags, script=SCENARIO_PHP, env=None, php=PHP, cwd=REPO):
        script_flags = ("-s", script) if script else ()  # None: routes only
        args = ["-H", "127.0.0.1", "-P", "0", "-e", php, *script_flags, *flags]
        bridge = Bridge(args, env=env, cwd=cwd)
        started.append(bridge)
        return bridge.wait_listening()

    yield start
    _kill_running(started)


@pytest.fixture
def start_readme_bridge():
    """start_readme_bridge(NAME, replacements=()) -> the README's command ``.. snippet: NAME``
    (see support.readme_command), run from the checkout and listening; stopped after the test."""
    started = []

    def start(name, replacements=()):
        program, arguments = readme_command(name, replacements)
        bridge = Bridge(arguments, command=[program])
        started.append(bridge)
        return bridge.wait_listening()

    yield start
    _kill_running(started)


# Chromium must not try to reach the internet (closed here) nor need a GPU or sandbox (root).
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--window-size=1100,800"]


@pytest.fixture
def chromium(tmp_path):
    """A headless Chromium driven by selenium (the browser tests: the dev console, the chat)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS + ["--user-data-dir=%s" % (tmp_path / "profile")]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _kill_running(bridges):
    for bridge in bridges:
        if bridge.process.poll() is None:
            bridge.kill()


@pytest.fixture
def redis_server():
    """A redis-server of its own on a free loopback port (support.RedisServer); stopped by
    PID after the test."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def tls_redis_server(tmp_path):
    """A redis-server that speaks TLS only, its CA in its URL (support.RedisServer)."""
    server = RedisServer(tls_directory=tmp_path)
    yield server
    server.stop()


@pytest.fixture
def start_node(start_bridge, redis_server):
    """start_node(*flags) -> a listening greenbridge node on the test's Redis (NODE_FLAGS:
    the API, ``.api`` a cent Client; subscribe route /live; channels.php on /c), ready;
    `broker` names another Redis URL."""
    from cent import Client

    def start(*flags, env=None, broker=None):
        node = start_bridge("--broker", broker or redis_server.url, *NODE_FLAGS, *flags,
                            env=env)
        node.api = Client("http://127.0.0.1:%d/api" % admin_port(node), NODE_API_KEY,
                          timeout=10)
        wait_until(lambda: node_ready(node), 10, "node ready (subscribed in Redis)")
        return node
    return start
