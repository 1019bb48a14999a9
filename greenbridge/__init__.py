"""greenbridge: a gevent WebSocket server that gives every client its own PHP process."""

__version__ = "0.1.0"
