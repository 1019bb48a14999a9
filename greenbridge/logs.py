"""Log set-up: the level names the Rust bridge used, one line per event, text or JSON."""

import json
import logging
import re
import sys
import time

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}

# Connection log lines start with "[<connection ID>] ".
_CONNECTION_ID_PREFIX = re.compile(r"^\[([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\] ")


_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the connection ID, when there is one, is a field of its own."""

    worker = None  # the worker number, in a --workers process

    def format(self, record):
        message = record.getMessage()
        entry = {"time": self.formatTime(record), "level": record.levelname,
                 "logger": record.name}
        if self.worker is not None:
            entry["worker"] = self.worker
        prefix = _CONNECTION_ID_PREFIX.match(message)
        if prefix:
            entry["connection_id"] = prefix.group(1)
            message = message[prefix.end():]
        entry["message"] = message
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)

    def formatTime(self, record, datefmt=None):
        return super().formatTime(record, "%Y-%m-%dT%H:%M:%S") + ".%03dZ" % record.msecs


def configure_logging(level_name, log_format="text", stream=None):
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter(_TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level_name])


def name_worker(number):
    """From now on every line names worker `number` (the workers share one output)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter):
            handler.formatter.worker = number
        else:
            handler.setFormatter(logging.Formatter(
                _TEXT_FORMAT.replace("%(levelname)s", "worker %d %%(levelname)s" % number)))


class RateLimitedLog:
    """Logs a recurring problem at most once per `interval` seconds, counting what it held back."""

    def __init__(self, logger, level, interval=1.0):
        self._logger = logger
        self._level = level
        self._interval = interval
        self._last = float("-inf")
        self._held_back = 0

    def __call__(self, message, *args):
        now = time.monotonic()
        if now - self._last < self._interval:
            self._held_back += 1
            return
        if self._held_back:
            message += " (%d more like it not logged)"
            args += (self._held_back,)
        self._last, self._held_back = now, 0
        self._logger.log(self._level, message, *args)


def format_address(address):
    """host:port of a socket address, for log lines."""
    return "%s:%s" % address[:2] if isinstance(address, tuple) else str(address)
