"""--workers N: an arbiter process and N pre-forked server processes.

The arbiter binds every socket (server.Listeners), then forks the workers.
All workers accept from the one WebSocket socket; each has a back-connection
socket of its own, so PHP connects back to the worker that spawned it. The
global limits live in shared.SharedCounters, one row per worker.

The arbiter serves nothing itself. It replaces a worker that dies, passes
SIGTERM and SIGINT on to all workers as SIGTERM (a second one makes them
kill their PHP processes and exit at once), and exits when they all have.
A worker whose arbiter dies (even by SIGKILL) gets SIGTERM from the kernel
and drains, so no worker or PHP process is left behind as an orphan.
"""

import ctypes
import logging
import os
import signal
import time

import gevent
from gevent.os import fork_and_watch
from gevent.queue import Queue

from greenbridge.logs import name_worker
from greenbridge.process import describe_exit

log = logging.getLogger("greenbridge.workers")

EXIT_OK = 0
EXIT_WORKER_FAILED = 1
# A worker that dies sooner than this after its start is replaced only after
# this long, so a worker that cannot run does not become a fork loop.
_MIN_WORKER_LIFETIME = 1.0
# On top of the workers' own shutdown time, before they are told twice.
_SHUTDOWN_SLACK = 10.0


class _Worker:
    __slots__ = ("number", "pid", "started")

    def __init__(self, number, pid):
        self.number = number
        self.pid = pid
        self.started = time.monotonic()


class Arbiter:
    def __init__(self, config, listeners, counters, serve_worker, notifier, links):
        """`serve_worker(number)` runs worker `number` (1..N) and returns its exit status;
        `links` (channels.workers.WorkerLinks) makes each worker's link to the arbiter;
        None when the workers share channels through --broker."""
        self._config = config
        self._links = links
        self._notifier = notifier
        self._listeners = listeners
        self._counters = counters
        self._serve_worker = serve_worker
        self._workers = {}
        self._starts_pending = 0
        self._events = Queue()
        self._signals_received = 0
        self._signal_handlers = []

    def run(self):
        self._signal_handlers = [gevent.signal_handler(signum, self._events.put, ("signal", signum))
                                 for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                                signal.SIGUSR1)]
        log.info("greenbridge arbiter (pid %d) starting %d workers",
                 os.getpid(), self._config.workers)
        for number in range(1, self._config.workers + 1):
            self._start_worker(number)
        failed = False
        while self._workers or self._starts_pending:
            event = self._events.get()
            if event[0] == "signal" and event[1] == signal.SIGHUP:
                self._on_reload()
            elif event[0] == "signal" and event[1] == signal.SIGUSR1:
                self._signal_workers(signal.SIGUSR1)  # each logs its status line
            elif event[0] == "signal":
                self._on_signal(event[1])
            elif event[0] == "exited":
                failed |= self._on_exit(event[1], event[2])
            elif event[0] == "start":
                self._starts_pending -= 1
                if not self._signals_received:
                    self._start_worker(event[1])
            elif event[0] == "shutdown overdue":
                log.warning("workers still running %gs after the shutdown began; telling them again",
                            event[1])
                self._signal_workers(signal.SIGTERM)
        log.info("greenbridge arbiter stopped")
        if self._signals_received > 1 or failed:
            return EXIT_WORKER_FAILED
        return EXIT_OK

    def _start_worker(self, number):
        arbiter_pid = os.getpid()
        if self._links is not None:
            self._links.before_fork(number)
        pid = fork_and_watch(self._on_child_exit, ref=True)
        if pid == 0:
            _end_with_parent(arbiter_pid)
            self._become_worker(number)
        if self._links is not None:
            self._links.in_arbiter(number)
        self._workers[pid] = _Worker(number, pid)

    def _on_child_exit(self, watcher):
        # Called by the hub's child watcher: only queue the event.
        self._events.put(("exited", watcher.pid, watcher.rstatus))

    def _become_worker(self, number):
        """In the forked child: drop the arbiter's part, serve, never return."""
        status = EXIT_WORKER_FAILED
        name_worker(number)
        try:
            for handler in self._signal_handlers:
                handler.cancel()
            # The arbiter passes SIGINT on as SIGTERM; ignoring it here keeps a
            # Ctrl-C, which reaches the whole process group, from counting twice.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            # A SIGHUP passed on before the worker set up its reload handler
            # must not kill it (SIGHUP's default action).
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            status = self._serve_worker(number)
        except BaseException:
            log.exception("worker %d failed", number)
        finally:
            logging.shutdown()
            os._exit(status)

    def not_ready_because(self):
        """None when new connections can be served, else why not (for /readyz)."""
        if self._signals_received:
            return "shutting down"
        if not self._workers:
            return "no worker running"
        return None

    def _on_reload(self):
        self._notifier.reloading()
        log.info("SIGHUP: passing it on to %d workers", len(self._workers))
        self._signal_workers(signal.SIGHUP)
        self._notifier.ready()

    def _on_signal(self, signum):
        self._signals_received += 1
        name = signal.Signals(signum).name
        if self._signals_received == 1:
            self._notifier.stopping()
            log.info("%s: shutting down %d workers (again to exit at once)", name, len(self._workers))
            # New connections must be refused at once, not queue on the arbiter's copy.
            self._listeners.close_websocket()
            overdue = self._config.shutdown_timeout + 2 * self._config.php_kill_grace + _SHUTDOWN_SLACK
            gevent.spawn_later(overdue, self._events.put, ("shutdown overdue", overdue))
        else:
            log.warning("second %s: workers kill all PHP processes and exit now", name)
        self._signal_workers(signal.SIGTERM)

    def _signal_workers(self, signum):
        for pid in self._workers:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _on_exit(self, pid, raw_status):
        """Forget (and, unless stopping, replace) a worker; True when it failed."""
        worker = self._workers.pop(pid, None)
        if worker is None:
            return False
        # Its connections ended with it.
        self._counters.clear_row(worker.number - 1)
        status = os.waitstatus_to_exitcode(raw_status)
        how = describe_exit(status)
        if self._signals_received:
            log.info("worker %d (pid %d) ended (%s)", worker.number, pid, how)
            return status != 0
        lifetime = time.monotonic() - worker.started
        delay = _MIN_WORKER_LIFETIME if lifetime < _MIN_WORKER_LIFETIME else 0
        log.warning("worker %d (pid %d) ended (%s); starting a new one%s", worker.number, pid,
                    how, " in %gs" % delay if delay else "")
        self._starts_pending += 1
        gevent.spawn_later(delay, self._events.put, ("start", worker.number))
        return False


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with_parent(arbiter_pid):
    """In a new worker: have the kernel send SIGTERM (drain) when the arbiter dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("workers will outlive a killed arbiter: prctl failed: %s",
                    os.strerror(ctypes.get_errno()))
    # The arbiter may have died between the fork and the prctl: no signal then.
    if os.getppid() != arbiter_pid:
        os._exit(EXIT_WORKER_FAILED)
