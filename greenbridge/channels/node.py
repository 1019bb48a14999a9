"""Who this node is, for the server API's ``info``: one entry per live node."""

import os
import socket
import time
import uuid

from greenbridge import __version__


class Node:
    """This process as a node: a unique ID, a readable name and its start time."""

    def __init__(self, name=None):
        self.uid = str(uuid.uuid4())
        self.name = name or "%s_%d" % (socket.gethostname(), os.getpid())
        self._started = time.monotonic()

    def entry(self, counts):
        """Its ``info`` entry, from the broker's counts (num_clients, num_users, ...)."""
        return dict(counts, uid=self.uid, name=self.name, version=__version__,
                    uptime=int(time.monotonic() - self._started))
