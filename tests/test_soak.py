"""The soak script, short: 500 connections, a message a second each, for 30 seconds."""

import json
import os
import subprocess
import sys

import pytest

from support import REPO


@pytest.mark.timeout(600)
def test_500_connections_for_30_seconds_drop_nothing_and_keep_memory_flat():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "soak.py"), "--connections", "500",
         "--duration", "30"], capture_output=True, text=True, timeout=540)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print("\nsoak:", json.dumps(report))
    assert report["php_processes_at_start"] == 500
    assert report["dropped"] == report["wrong_echoes"] == 0, result.stderr[-3000:]
    # Each connection sends, waits for the echo, and sleeps out the rest of the second: on a
    # loaded machine a round can take longer than a second, never longer than 1 s + the
    # slowest echo. Over the 30 s (the ramp-up adds more) each connection has that many rounds.
    slowest_round = 1 + report["latency_max_ms"] / 1000
    assert report["messages"] >= 500 * int(30 / slowest_round)
    assert report["rss_growth_mib"] <= 5
    assert report["tracebacks_in_log"] == 0
    assert report["server_exit_status"] == 0
    assert result.returncode == 0
