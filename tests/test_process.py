"""SpawnedPopen: what a process started by posix_spawn gets, next to what gevent's fork gave."""

import os

import gevent
import pytest
from gevent import subprocess

from greenbridge.process import SpawnedPopen

SIGPIPE_BIT = 1 << (13 - 1)
SIGXFSZ_BIT = 1 << (25 - 1)


def run(command, env=None):
    popen = SpawnedPopen(command, env=env if env is not None else dict(os.environ),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    output = popen.stdout.read().decode()
    popen.stdout.close()
    popen.stderr.close()
    return popen.wait(timeout=10), output


def test_exit_status_and_output_reach_the_parent():
    status, output = run(["sh", "-c", "echo hello; exit 3"])
    assert (status, output) == (3, "hello\n")


def test_child_gets_only_the_environment_given():
    status, output = run(["sh", "-c", 'echo "$ONLY_THIS:${HOME:-unset}"'], env={"ONLY_THIS": "yes",
                                                                               "PATH": "/usr/bin:/bin"})
    assert output == "yes:unset\n"


def test_child_leads_a_new_session():
    status, output = run(["sh", "-c", "echo $$; ps -o sid= -p $$"])
    pid, session = output.split()
    assert pid == session


def test_signals_python_ignores_are_default_again_in_the_child():
    _, output = run(["grep", "^SigIgn", "/proc/self/status"])
    ignored = int(output.split()[1], 16)
    assert not ignored & SIGPIPE_BIT
    assert not ignored & SIGXFSZ_BIT


def test_child_inherits_only_its_standard_streams():
    read_end, write_end = os.pipe()  # close-on-exec, as every descriptor Python opens
    try:
        _, output = run(["ls", "/proc/self/fd"])
    finally:
        os.close(read_end)
        os.close(write_end)
    # ls's own directory descriptor is the one above 2.
    assert sorted(int(fd) for fd in output.split())[:3] == [0, 1, 2]
    assert len(output.split()) == 4


def test_passed_descriptors_stay_open_in_the_parent():
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    popen = SpawnedPopen(["echo", "through the pipe"], env={"PATH": "/usr/bin:/bin"},
                         stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end)
    assert popen.wait(timeout=10) == 0
    os.write(write_end, b"parent\n")  # still ours
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        assert pipe.read() == b"through the pipe\nparent\n"


def test_a_missing_program_raises_oserror_and_leaks_nothing():
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        SpawnedPopen(["/nonexistent/php"], env={}, stdin=subprocess.DEVNULL)
    assert sorted(os.listdir("/proc/self/fd")) == before


def running_says_the_kernel(pid):
    """True while the process exists and has not exited (a zombie has exited)."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_exit_wakes_a_waiting_greenlet_without_polling():
    popen = SpawnedPopen(["sleep", "0.5"], env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)
    ticks = []  # at each tick of another greenlet: was the child still running?

    def tick():
        while True:
            gevent.sleep(0.01)
            ticks.append(running_says_the_kernel(popen.pid))

    ticker = gevent.spawn(tick)
    try:
        assert popen.result.get(timeout=10) == 0  # gevent's child watcher filled it
        ticks_before_the_wake = list(ticks)
    finally:
        ticker.kill()
    # The loop ran while the child did: a hub blocked until the child ended
    # would let no tick see it running.
    assert ticks_before_the_wake.count(True) >= 3, ticks_before_the_wake
    assert not running_says_the_kernel(popen.pid)  # woken by its exit, and reaped
