"""README.rst as a newcomer reads it: it renders as sections in a useful order, and the
tutorial's commands and handler run as printed (read from README.rst, not copied here)."""

import json
import re
import subprocess
import sys

import docutils.nodes
from websockets.sync.client import connect

from support import README, output_until, readme_document, readme_snippet

# Characters RST allows for section adornments.
_ADORNMENT = re.compile(r"([=\-`:'\"~^_*+#<>.])\1{2,}")


def section_titles():
    return [section[0].astext() for section in readme_document().findall(docutils.nodes.section)]


def test_every_title_written_in_the_readme_renders_as_a_section():
    """A title that runs into the paragraph above it (no blank line) renders as text:
    every underlined line of the source must be a section of the parsed document."""
    with open(README, encoding="utf-8") as readme:
        lines = readme.read().split("\n")
    written = [lines[number - 1] for number in range(1, len(lines))
               if _ADORNMENT.fullmatch(lines[number]) and lines[number - 1].strip()
               and len(lines[number]) == len(lines[number - 1])]
    rendered = set(section_titles()) | {readme_document().get("title")}
    assert len(written) > 10 and [title for title in written if title not in rendered] == []


def test_the_readme_goes_from_first_commands_to_tutorial_to_how_tos_to_reference_to_figures():
    titles = section_titles()
    order = [titles.index(title) for title in (
        "Tutorial: five minutes", "Tutorial: a chat in five more minutes",  # after the two commands
        "wss:// (TLS)", "Automatic certificates (ACME)", "Deployment",   # how-tos
        "Configuration", "The environment given to PHP", "What clients see",  # reference
        "Performance", "Reliability")]                               # figures
    assert titles[0] == "Tutorial: five minutes" and order == sorted(order), titles
    # The two first-screen commands come before any section.
    with open(README, encoding="utf-8") as readme:
        source = readme.read()
    first_section = source.index("\nTutorial: five minutes\n")
    assert 0 < source.index("scripts/setup.sh &&") < source.index("scripts/test.sh") < first_section


def test_tutorial_client_talks_to_the_first_command(start_readme_bridge):
    bridge = start_readme_bridge("first-run")
    # The README's command with this venv's python and the port the bridge got.
    command = readme_snippet("tutorial-client").replace(".venv/bin/python", sys.executable) \
        .replace(":8080/", ":%d/" % bridge.port).split()
    client = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        client.stdin.write(b"hello\n")
        client.stdin.flush()
        shown = output_until(client, b"< hello")
        assert b"< hello" in shown, shown  # the interactive client prints what came back
        client.stdin.close()
        assert client.wait(10) == 0
    finally:
        if client.poll() is None:
            client.kill()


def test_tutorial_handler_and_routes_run_as_printed(start_readme_bridge, tmp_path):
    handler = tmp_path / "shout.php"
    handler.write_text(readme_snippet("tutorial-handler"))
    bridge = start_readme_bridge("tutorial-run", [("shout.php", str(handler))])
    with connect(bridge.url()) as ws:
        assert ws.recv(timeout=10) == "hello 127.0.0.1"
        ws.send("hi there")
        assert ws.recv(timeout=10) == "HI THERE"
    bridge.stop()

    bridge = start_readme_bridge("tutorial-routes", [("shout.php", str(handler))])
    with connect(bridge.url("/rpc")) as ws:
        assert "hello" in json.loads(ws.recv(timeout=10))
        ws.send('{"id": 1, "method": "add", "params": [2, 3]}')
        assert json.loads(ws.recv(timeout=10)) == {"id": 1, "result": 5}
    with connect(bridge.url("/elsewhere")) as ws:
        assert ws.recv(timeout=10) == "hello 127.0.0.1"


def test_option_tables_have_one_row_per_option():
    """In a simple table, text in the first column starts a new row: a flag's wrapped
    "(repeatable)" became a row of its own, with no option in it."""
    tables = 0
    for table in readme_document().findall(docutils.nodes.table):
        header, *body = [[entry.astext() for entry in row.findall(docutils.nodes.entry)]
                         for row in table.findall(docutils.nodes.row)]
        if "environment variable" in header:
            tables += 1
            assert [cells[0] for cells in body if not cells[0].startswith("-")] == []
    assert tables >= 3
