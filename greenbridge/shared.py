"""Counters shared by all worker processes: one row of integers per worker.

The table lives in a memfd mapped before the workers are forked, so every
worker (and the arbiter) sees the same memory. Each worker writes only its
own row, so plain adds need no lock; any process can read every row (the
global limits sum them; a metrics scrape can show them per worker).

Checking a global limit and taking a slot must be one step, or two workers
could both take the last slot: ``add_if_below`` does it under a POSIX record
lock on the memfd. The kernel drops that lock when its holder dies, so a
killed worker cannot leave the others locked out; the lock is only ever
tried without blocking, so the gevent hub never waits in the kernel.
"""

import fcntl
import mmap
import os

import gevent

# What the workers count together. Each is one column; every worker has a row.
OPEN_CONNECTIONS = "open_connections"
PHP_PROCESSES = "php_processes"  # slots of admitted connections that run PHP
COUNTER_NAMES = (OPEN_CONNECTIONS, PHP_PROCESSES)

_ITEM_SIZE = 8  # signed 64-bit integers
# Pause between attempts to take the lock another worker holds (for microseconds).
_LOCK_RETRY_INTERVAL = 0.0005


class SharedCounters:
    def __init__(self, names, rows):
        self.names = tuple(names)
        self.rows = rows
        self._column = {name: index for index, name in enumerate(self.names)}
        self._fd = os.memfd_create("greenbridge-counters")
        size = max(1, rows * len(self.names)) * _ITEM_SIZE
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)
        self._values = memoryview(self._map).cast("q")
        self._own_row = 0

    def use_row(self, row):
        """This process writes row `row` (called in each worker after the fork)."""
        self._own_row = row

    def _index(self, row, name):
        return row * len(self.names) + self._column[name]

    def add(self, name, delta=1):
        """Add to this process's own row (no lock: no other process writes it)."""
        self._values[self._index(self._own_row, name)] += delta

    def value(self, name, row):
        return self._values[self._index(row, name)]

    def per_row(self, name):
        return [self.value(name, row) for row in range(self.rows)]

    def total(self, name):
        return sum(self.per_row(name))

    def add_if_below(self, name, limit):
        """Add 1 to this row if the total over all rows is below `limit`.

        Returns (added, total seen before adding).
        """
        if self.rows == 1:
            return self._add_if_below(name, limit)
        self._lock()
        try:
            return self._add_if_below(name, limit)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _add_if_below(self, name, limit):
        total = self.total(name)
        if total >= limit:
            return False, total
        self.add(name)
        return True, total

    def _lock(self):
        while True:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except (BlockingIOError, PermissionError):
                gevent.sleep(_LOCK_RETRY_INTERVAL)

    def clear_row(self, row):
        """Zero a row whose worker has died (its connections died with it)."""
        for name in self.names:
            self._values[self._index(row, name)] = 0
