"""One PHP process: spawning it (its environment: php_environment.py), output relay, ending it.

PHP runs in its own process group (a new session), so ending the group also
ends whatever children the script started.

It is started with gevent.subprocess, whose Popen forks this interpreter
and runs Python in the child until exec. For a server process of tens of MiB
that fork cost about 7 ms of CPU per connection, with the event loop
stopped, half of greenbridge's CPU per short connection. ``SpawnedPopen``
keeps gevent's Popen (its pipes, wait, poll and child watcher) and starts the
child with posix_spawn instead, which shares the parent's memory until exec.
"""

import logging
import os
import re
import signal

import gevent
from gevent import subprocess
from gevent.monkey import get_original

from greenbridge.adapters.gevent_popen import OwnStartPopen
from greenbridge.logs import connection_fields
from greenbridge.php_environment import CONNECT_BACK_HINT

log = logging.getLogger("greenbridge.php")

# Output lines longer than this are logged cut, so a runaway script cannot
# flood the log or make the relay hold megabytes.
LOG_LINE_MAX_BYTES = 8192
_PIPE_READ_SIZE = 65536
# At the end, what is left in a pipe is logged up to this much (a process
# that escaped the group kill could otherwise keep the relay reading).
_FINAL_READ_LIMIT = 1024 * 1024
# PHP's own error messages: "PHP Parse error:  ..." as log_errors writes them
# to stderr (Debian's php-cli), "Fatal error: ..." as display_errors writes them.
_PHP_ERROR_LINE = re.compile(r"(PHP )?[A-Z][a-z]*( [a-z]+)* error: ")

# A require of a missing file that newcomers meet, and what to do about it.
_MISSING_REQUIRE_HINTS = (
    ("Greenbridge.php", "require getenv('WSS_PHP_LIB') finds the library"),
    ("vendor/autoload.php", "composer install in the script's project makes it"),
)


class PhpProcess:
    """A running PHP script, its stdout and stderr relayed to the log line by line."""

    def __init__(self, popen, relays):
        self._popen = popen
        self.pid = popen.pid
        self._relays = relays
        self._ended = False

    @classmethod
    def spawn(cls, command, environment, connection_id):
        """Start the script; raises OSError when it cannot be started."""
        # Plain pipes read by hub watchers (see LineRelay): an idle connection
        # then holds no relay greenlets and no buffered readers.
        stdout_read, stdout_write = os.pipe2(os.O_CLOEXEC)
        stderr_read, stderr_write = os.pipe2(os.O_CLOEXEC)
        try:
            popen = SpawnedPopen(command, env=environment, stdin=subprocess.DEVNULL,
                                 stdout=stdout_write, stderr=stderr_write)
        except BaseException:
            for fd in (stdout_read, stderr_read):
                os.close(fd)
            raise
        finally:
            for fd in (stdout_write, stderr_write):
                os.close(fd)
        return cls(popen, (LineRelay(stdout_read, connection_id, "stdout", logging.INFO),
                           LineRelay(stderr_read, connection_id, "stderr", logging.WARNING)))

    @property
    def last_error(self):
        """PHP's last error message line, or None: from stderr, else stdout (where
        display_errors writes). Complete once end() has read the pipes to their end."""
        stdout, stderr = self._relays
        return stderr.error_line or stdout.error_line

    @property
    def exit_event(self):
        """Waitable that becomes ready when the process exits."""
        return self._popen.result

    @property
    def returncode(self):
        """None while running; the exit status, or -signal when a signal killed it."""
        return self._popen.poll()

    def wait(self, timeout):
        """The exit status, or None when it still runs after `timeout` seconds."""
        try:
            return self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def end(self, grace):
        """Let it exit on its own, else SIGTERM the group, SIGKILL it, reap, close the pipes.

        The caller has closed PHP's socket already: a script that sees EOF gets
        `grace` seconds to finish by itself, then `grace` more after SIGTERM.
        """
        if self._ended:
            return
        self._ended = True
        if self.wait(grace) is None:
            self._signal_group(signal.SIGTERM)
            self.wait(grace)
        # Children of the script may outlive it; the group goes in any case.
        self._signal_group(signal.SIGKILL)
        self._popen.wait()
        for relay in self._relays:
            relay.finish()

    def kill_now(self):
        """For an immediate exit: SIGKILL the group without waiting."""
        if self._ended:
            return
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum):
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


_SIGNALS_TO_RESTORE = (signal.SIGPIPE, signal.SIGXFSZ)
# os.posix_spawnp as Python has it: once the server monkey-patches os, gevent's
# version would start a second child watcher beside fork_and_watch's.
_posix_spawnp = get_original("os", "posix_spawnp")


class SpawnedPopen(OwnStartPopen):
    """gevent's Popen, its child started by posix_spawn, in a new session.

    Only what PhpProcess uses is supported: a command list, an environment
    and descriptors (or DEVNULL) for the standard streams. posix_spawn
    closes nothing itself: the child gets only those three because every
    other descriptor is close-on-exec (see _close_inherited_on_exec).
    """

    _inherited_closed_on_exec = False

    def start_child(self, executable, args, env, child_streams):
        if not SpawnedPopen._inherited_closed_on_exec:
            _close_inherited_on_exec()
            SpawnedPopen._inherited_closed_on_exec = True
        return _posix_spawnp(
            executable, args, env, setsid=True,
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in child_streams],
            # Python ignores SIGPIPE and SIGXFSZ; ignored signals survive exec.
            setsigdef=_SIGNALS_TO_RESTORE)


def _close_inherited_on_exec():
    """Mark every descriptor above 2 close-on-exec, once per process.

    Python, gevent and OpenSSL open theirs close-on-exec already; only what
    the server inherited from whoever started it may lack the flag, and PHP
    must not get it (a listening socket held by every script, say).
    """
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the directory's own descriptor, closed by now


def explain_early_end(returncode, error_line):
    """Why a PHP process that ended before connecting back did, for the log: PHP's
    own error message (and what to do about a missing library), or what a script
    must do first when it exited saying nothing."""
    if error_line is not None:
        if "Failed opening required" in error_line:
            for missing, what_to_do in _MISSING_REQUIRE_HINTS:
                if missing in error_line:
                    return "%s (%s)" % (error_line, what_to_do)
        return error_line
    if returncode < 0:
        return "no error message"  # killed: nothing the script did wrong
    return "no error message; " + CONNECT_BACK_HINT


def describe_exit(returncode):
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return "killed by %s" % signal.Signals(-returncode).name
        except ValueError:
            return "killed by signal %d" % -returncode
    return "exit status %d" % returncode


class LineRelay:
    """Logs each line written to a pipe, cut to LOG_LINE_MAX_BYTES, never blocking PHP.

    A hub watcher calls it when the pipe is readable: no greenlet waits on the
    pipe, and nothing is buffered but the start of an unfinished line.
    """

    __slots__ = ("_fd", "_watcher", "_line", "_dropped", "_log_fields", "_stream_name",
                 "_level", "error_line")

    def __init__(self, fd, connection_id, stream_name, level):
        os.set_blocking(fd, False)
        self._fd = fd
        self._line = b""  # the line so far, up to LOG_LINE_MAX_BYTES
        self._dropped = 0  # bytes of it past the cut
        self._log_fields = connection_fields(connection_id)
        self._stream_name = stream_name
        self._level = level
        self.error_line = None  # the last line that is one of PHP's error messages
        self._watcher = gevent.get_hub().loop.io(fd, 1)
        self._watcher.start(self._read, _PIPE_READ_SIZE)

    def _read(self, limit):
        """Log what the pipe holds, up to `limit` bytes; False once it ended."""
        while limit > 0:
            try:
                data = os.read(self._fd, _PIPE_READ_SIZE)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                self._close()
                return False
            self._feed(data)
            limit -= len(data)
        return True

    def _feed(self, data):
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            room = LOG_LINE_MAX_BYTES - len(self._line)
            if end - start > room:
                self._dropped += end - start - room
                end_kept = start + room
            else:
                end_kept = end
            if end_kept > start:
                self._line += data[start:end_kept]
            if newline < 0:
                return
            self._log_line()
            start = newline + 1

    def _log_line(self):
        line = self._line
        if self._dropped:
            line += b"... [%d more bytes]" % self._dropped
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        self._line, self._dropped = b"", 0
        if _PHP_ERROR_LINE.match(text):
            self.error_line = text
        log.log(self._level, "%s: %s", self._stream_name, text, extra=self._log_fields)

    def finish(self):
        """The process is gone: log what is left in the pipe and close it."""
        if self._fd is not None and self._read(_FINAL_READ_LIMIT):
            self._close()

    def _close(self):
        if self._line or self._dropped:
            self._log_line()  # the last line had no newline
        self._watcher.stop()
        self._watcher.close()
        os.close(self._fd)
        self._fd = None
