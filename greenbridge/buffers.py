"""Buffers for client payloads larger than one receive, taken as the payload arrives."""

import mmap


class LargePayloads:
    """Buffers for payloads larger than one receive: anonymous mappings.

    A bytearray is zero-filled at once, so a header announcing 16 MiB would
    cost 16 MiB before any of it came. The kernel gives a mapping's pages
    memory only when the receive writes them, and the payload is still
    received in place, with no copy. The mapping of the last payload read
    whole is kept for the next one (one per process, as large as the largest
    payload): its pages are already there, so a stream of large frames costs
    no page faults.
    """

    def __init__(self):
        self._spare = None

    def take(self, count):
        """A mapping of at least `count` bytes."""
        mapping = self._spare
        if mapping is not None and len(mapping) >= count:
            self._spare = None
            return mapping
        return mmap.mmap(-1, count, flags=mmap.MAP_PRIVATE)

    def give_back(self, mapping):
        """The payload was read whole: keep its mapping for the next (a failed read drops it)."""
        if self._spare is None or len(self._spare) < len(mapping):
            self._spare = mapping


large_payloads = LargePayloads()
