"""RFC 6455 conformance through the bridge: the Autobahn TestSuite cases 1 to 10 (run by kosoku)
against framed mode and conf/echo.php, PHP echoing through Greenbridge.php.

Each case opens its own connection, so each waits for a PHP process to start; many give
the echo 0.5 s (6.x) or 1 s before they close. Starting PHP and echoing takes about 25 ms
here, under 100 ms with the machine's two cores loaded 4 and 8 times over: every case runs
once, and a failure is a failure (its duration and what arrived are in the message).
"""

import asyncio
import collections

import pytest
from kosoku import FailureError, run_fuzzingclient

from support import LIBRARY_ECHO_PHP, stop_cleanly

# Autobahn numbers its case groups 1-7, 9, 10 (there is no group 8).
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}


def run_cases(url, cases):
    try:
        return asyncio.run(run_fuzzingclient(url, cases, concurrency=1))
    except FailureError as failure:
        return failure.results


def passed(result):
    return result.behavior.value in ACCEPTED and result.behavior_close.value in ACCEPTED


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
                          script=LIBRARY_ECHO_PHP)
    results = run_cases("ws://127.0.0.1:%d" % bridge.port, CASES)
    print("\nAutobahn verdicts (behavior/close) per case group:\n" + summary(results))
    assert len(results) >= 300
    failed = ["%s: %s/%s %s %s (server sent close %s; %d ms; received %.200r)" % (
        r.case_id, r.behavior.value, r.behavior_close.value, r.result, r.result_close,
        r.remote_close_code, r.duration, r.received) for r in results if not passed(r)]
    assert not failed, "\n".join(failed)
    stop_cleanly(bridge)  # exit 0, and no traceback in the whole log
