"""The value types of the options: each parses one value and refuses a bad one.

argparse turns a type's ValueError into "argument --x: invalid <name> value:
'...'", so each type's __name__ reads well in that sentence; a value over its
maximum says so (``not_over``). Checks that need more than one option are in
checks.py. Every check there raises ``ConfigError``, with a message that names
the option and the problem, so start-up fails with one clear line.
"""

import argparse
import ipaddress
import os

from greenbridge.http_token import is_token


class ConfigError(ValueError):
    """A setting has a value the bridge cannot run with."""


LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
LOG_FORMATS = ("text", "json")
TLS_MODES = ("none", "internal", "manual", "automate")
TLS_KEY_TYPES = ("ed25519", "p256", "p384", "rsa2048", "rsa4096")
TLS_CLIENT_AUTH_MODES = ("none", "request", "require", "verify-if-given", "require-and-verify")
TLS_VERSIONS = ("1.2", "1.3")
# --message-mode: how messages travel to and from PHP (modes.py has the codecs).
RAW = "raw"
LINE = "line"
FRAMED = "framed"
MODES = (RAW, LINE, FRAMED)
# --php-env: inherit (the Rust bridge's way: everything but WSS_CONFIG_*) or
# minimal (what a program needs to run and speak the locale, no more).
PHP_ENV_MODES = ("inherit", "minimal")
# The Rust bridge's default; unset, --max-write-buffer-size grows to --max-payload-size.
DEFAULT_MAX_WRITE_BUFFER_SIZE = 16 * 1024 * 1024

# The largest values accepted. Past them a number is a typo or a
# misunderstanding, and some used to fail on every connection instead of at
# start-up (a MemoryError for each read, setsockopt refusing a number over a C int).
MiB = 2 ** 20
GiB = 2 ** 30
MAX_READ_SIZE = 16 * MiB  # --buffer-size: allocated for every read from PHP
# --write-buffer-size goes to setsockopt, which takes a C int; the kernel caps
# it at net.core.wmem_max anyway.
MAX_SOCKET_BUFFER = GiB
MAX_HELD_BYTES = GiB  # --max-write-buffer-size, per connection and direction
MAX_PAYLOAD_SIZE = 2 ** 32 - 1  # framed mode writes each message's length in 4 bytes
MAX_COUNT = 1000000  # connections, processes, pending handshakes
MAX_RETRIES = 1000
MAX_WORKERS = 1024
# Any timeout or interval. gevent's libuv loop counts in integer milliseconds
# and overflows near 1.8e16 seconds; 0 already means "never" where it can.
MAX_SECONDS = 365 * 24 * 3600


def _integer_type(name, minimum, maximum=None):
    def parse(text):
        number = int(text)
        if number < minimum or (maximum is not None and number > maximum):
            raise ValueError(text)
        return number

    parse.__name__ = name
    return parse


port = _integer_type("port (0-65535)", 0, 65535)
positive_int = _integer_type("positive integer", 1)
non_negative_int = _integer_type("non-negative integer", 0)


def at_most(maximum, number_type):
    """number_type, refusing values over `maximum` with a message that says so."""
    def parse(text):
        return not_over(maximum, text, number_type(text))

    parse.__name__ = number_type.__name__
    return parse


def not_over(maximum, text, number):
    if number > maximum:
        raise argparse.ArgumentTypeError("%s is over the maximum, %d" % (text.strip(), maximum))
    return number


def _non_negative_seconds(text):
    number = float(text)
    if not number >= 0 or number == float("inf"):
        raise ValueError(text)
    return number


_non_negative_seconds.__name__ = "number of seconds"
seconds = at_most(MAX_SECONDS, _non_negative_seconds)


def positive_seconds(text):
    number = float(text)
    if not 0 < number < float("inf"):
        raise ValueError(text)
    return not_over(MAX_SECONDS, text, number)


positive_seconds.__name__ = "positive number of seconds"


def log_level(text):
    level = text.strip().lower()
    if level == "warning":
        level = "warn"
    if level not in LOG_LEVELS:
        raise ValueError(text)
    return level


log_level.__name__ = "log level (trace, debug, info, warn, error)"


def log_format(text):
    if text.strip().lower() not in LOG_FORMATS:
        raise ValueError(text)
    return text.strip().lower()


log_format.__name__ = "log format (text, json)"


def choice_of(choices, case=str.lower):
    """One of `choices`, whatever the case the value was written in."""
    def parse(text):
        value = case(text.strip())
        if value not in choices:
            raise ValueError(text)
        return value

    parse.__name__ = "choice (%s)" % ", ".join(choices)
    return parse


def comma_list(text):
    """'A, B,C' -> ('A', 'B', 'C'); empty entries dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def comma_separated(item_type, empty_means_none=False):
    """The type of a list option (action="append"): every value may hold several
    items, comma-separated, so that 'a,b' in an environment variable or the config
    file means two items, as '[a, b]' does.

    An empty value is refused unless `empty_means_none`: for --allow-origin, say,
    no items would mean "any origin", the opposite of what was meant.
    """
    def parse(text):
        items = comma_list(text)
        if not items and not empty_means_none:
            raise ValueError(text)
        parsed = []
        for item in items:
            try:
                parsed.append(item_type(item))
            except ValueError:
                # argparse would quote the whole value; name the item at fault.
                raise argparse.ArgumentTypeError("invalid %s value: %r"
                                                 % (item_type.__name__, item)) from None
        return tuple(parsed)

    parse.__name__ = item_type.__name__
    return parse


def name(text):
    return text


name.__name__ = "name"


def network(text):
    return ipaddress.ip_network(text, strict=False)


network.__name__ = "IP address or CIDR"


_workers = at_most(MAX_WORKERS, positive_int)


def worker_count(text):
    if text.strip().lower() == "auto":
        return min(os.cpu_count() or 1, MAX_WORKERS)
    return _workers(text)


worker_count.__name__ = "worker count (a positive integer or auto)"


def message_mode(text):
    mode = text.strip().lower()
    if mode not in MODES:
        raise ValueError(text)
    return mode


message_mode.__name__ = "message mode (raw, line, framed)"


def subprotocol(text):
    protocol = text.strip()
    if not is_token(protocol):
        raise ValueError(text)
    return protocol


subprotocol.__name__ = "subprotocol name (an HTTP token)"


# How the values of a repeatable option (action="append") become one setting.

def flattened(groups):
    """The values of a comma_separated option, repeated or not, as one tuple."""
    return tuple(item for group in groups or () for item in group)


def flattened_or_none(groups):
    """flattened, but None when nothing was given (an empty value among them)."""
    return flattened(groups) or None


def separated_names(values):
    """Repeated flag values, each of which may also hold a ':' or ',' separated list."""
    names = []
    for value in values or ():
        names.extend(item.strip() for item in value.replace(",", ":").split(":") if item.strip())
    return tuple(names)


def text_or_none(text):
    """An empty value (as from WSS_CONFIG_X=) is not given."""
    return text or None
