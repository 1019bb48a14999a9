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

# Characters written as escapes (\n, \x1b, \u2028), so that nothing a client or
# a PHP script sends can end a log line, start a forged one, drive the terminal
# that shows the log or reorder what it shows: C0 and C1 controls, DEL, the
# Unicode line and paragraph separators, and the bidirectional overrides.
_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f"
                                r"\u202a-\u202e\u2066-\u2069]")

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

CONNECTION_ID = "connection_id"


def connection_fields(connection_id):
    """The ``extra`` of a log call about one connection.

    The ID is a field of the record, never parsed from the text: the text
    may hold what a client sent.
    """
    return {CONNECTION_ID: connection_id}


def escape_unsafe(text):
    """`text` with every character of _UNSAFE_CHARACTERS written as its Python escape."""
    if text.isprintable():  # the usual case; no unsafe character is printable
        return text
    return _UNSAFE_CHARACTERS.sub(_escape, text)


def _escape(match):
    return repr(match.group())[1:-1]


class TextFormatter(logging.Formatter):
    """One line per event; a connection's lines start with ``[<connection ID>] ``."""

    def __init__(self, fmt=_TEXT_FORMAT):
        super().__init__(fmt)

    def formatMessage(self, record):
        message = escape_unsafe(record.message)
        connection_id = getattr(record, CONNECTION_ID, None)
        record.message = message if connection_id is None else \
            "[%s] %s" % (connection_id, message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the connection ID, when there is one, is a field of its own."""

    worker = None  # the worker number, in a --workers process
    converter = time.gmtime

    def format(self, record):
        entry = {"time": self.formatTime(record), "level": record.levelname,
                 "logger": record.name}
        if self.worker is not None:
            entry["worker"] = self.worker
        connection_id = getattr(record, CONNECTION_ID, None)
        if connection_id is not None:
            entry[CONNECTION_ID] = connection_id
        entry["message"] = escape_unsafe(record.getMessage())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)

    def formatTime(self, record, datefmt=None):
        return super().formatTime(record, "%Y-%m-%dT%H:%M:%S") + ".%03dZ" % record.msecs


def configure_logging(level_name, log_format="text", stream=None):
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        formatter = JsonFormatter()
    else:
        formatter = TextFormatter()
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
            handler.setFormatter(TextFormatter(
                _TEXT_FORMAT.replace("%(levelname)s", "worker %d %%(levelname)s" % number)))


class RateLimitedLog:
    """Logs a recurring problem at most once per `interval` seconds, counting what it held back."""

    def __init__(self, logger, level, interval=1.0, extra=None):
        self._logger = logger
        self._level = level
        self._interval = interval
        self._extra = extra  # the log call's ``extra`` (connection_fields)
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
        self._logger.log(self._level, message, *args, extra=self._extra)


def format_address(address):
    """host:port of a socket address, for log lines."""
    return "%s:%s" % address[:2] if isinstance(address, tuple) else str(address)
