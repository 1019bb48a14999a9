"""gevent's Popen, its child started by a function of greenbridge's, not by fork.

Checked against gevent 26.9.0 (with CPython 3.11's subprocess). gevent's
Popen.__init__ hands the fork and exec to the private ``_execute_child``,
passing its parameters by position. OwnStartPopen overrides it and does
what gevent's own does around the fork: installs the loop's SIGCHLD
handling, watches the child with fork_and_watch and Popen's ``_on_child``
(which fills ``result`` and ``returncode``), sets ``_child_created``, and
closes the child's ends of the pipes and the ``_devnull`` descriptor,
saying so in ``_closed_child_pipe_fds`` (else __init__'s error path closes
them again).
"""

import os

from gevent import subprocess
from gevent.os import fork_and_watch

CHECKED_AGAINST = {"gevent": "26.9.0"}


class OwnStartPopen(subprocess.Popen):
    """A subclass defines ``start_child``; everything else is gevent's Popen.

    Only a command list, an environment and descriptors (or DEVNULL) for the
    standard streams are supported.
    """

    def start_child(self, executable, args, env, child_streams):
        """Start the program and return its PID; `child_streams` lists (descriptor,
        standard stream number) for each of stdin, stdout, stderr that was given."""
        raise NotImplementedError

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env,
                       universal_newlines, startupinfo, creationflags, shell,
                       p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite, *_unused):
        child_streams = [(fd, target) for fd, target in ((p2cread, 0), (c2pwrite, 1), (errwrite, 2))
                         if fd != -1]
        self._loop.install_sigchld()
        try:
            # The watcher starts before the loop runs again: an exit cannot be missed.
            self.pid = fork_and_watch(self._on_child, self._loop, True, fork=lambda: self.start_child(
                executable or args[0], args, env, child_streams))
            self._child_created = True
        finally:
            # The child has its copies: close the ends Popen opened for it (as
            # gevent's Popen does after a fork); descriptors passed in stay the caller's.
            devnull = getattr(self, "_devnull", None)
            for child_end, our_end in ((p2cread, p2cwrite), (c2pwrite, c2pread), (errwrite, errread)):
                if child_end != -1 and our_end != -1 and child_end != devnull:
                    os.close(child_end)
            if devnull is not None:
                os.close(devnull)
            self._closed_child_pipe_fds = True
