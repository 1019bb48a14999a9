"""RFC 6455 conformance through the bridge: the Autobahn TestSuite cases 1 to 10 (run by kosoku)
against framed mode and conf/examples/echo.php, PHP echoing through Greenbridge.php."""

import asyncio
import collections
import os

import pytest
from kosoku import FailureError, run_fuzzingclient

from conftest import REPO

ECHO_EXAMPLE = os.path.join(REPO, "conf", "examples", "echo.php")
# Autobahn numbers its case groups 1-7, 9, 10 (there is no group 8).
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}


def run_cases(url):
    try:
        return asyncio.run(run_fuzzingclient(url, CASES, concurrency=1))
    except FailureError as failure:
        return failure.results


def summary(results):
    """Verdict counts per case group, as the README shows them."""
    counts = collections.defaultdict(collections.Counter)
    for result in results:
        group = result.case_id.split(".")[0]
        counts[group][(result.behavior.value, result.behavior_close.value)] += 1
    return "\n".join("%-3s %s" % (group, ", ".join(
        "%d %s/%s" % (count, *verdict) for verdict, count in sorted(counts[group].items())))
        for group in sorted(counts, key=int))


@pytest.mark.timeout(900)
def test_autobahn_cases_1_to_10_pass_in_framed_mode(start_bridge):
    bridge = start_bridge("--message-mode", "framed", "--max-connections", "64",
                          script=ECHO_EXAMPLE)
    results = run_cases("ws://127.0.0.1:%d" % bridge.port)
    print("\nAutobahn verdicts (behavior/close) per case group:\n" + summary(results))
    assert len(results) >= 300
    failed = ["%s: %s/%s %s %s" % (r.case_id, r.behavior.value, r.behavior_close.value,
                                   r.result, r.result_close)
              for r in results
              if r.behavior.value not in ACCEPTED or r.behavior_close.value not in ACCEPTED]
    assert not failed, "\n".join(failed)
    assert bridge.process.poll() is None
