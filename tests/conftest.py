"""The pytest fixtures; the helpers the tests share live in support.py."""

import pytest

from support import PHP, REPO, SCENARIO_PHP, Bridge, readme_command


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


def _kill_running(bridges):
    for bridge in bridges:
        if bridge.process.poll() is None:
            bridge.kill()
