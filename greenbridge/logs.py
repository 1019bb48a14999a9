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


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the connection ID, when there is one, is a field of its own."""

    def format(self, record):
        message = record.getMessage()
        entry = {"time": self.formatTime(record), "level": record.levelname,
                 "logger": record.name}
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
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level_name])
