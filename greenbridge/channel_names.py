"""What a channel name may be.

Names come from tokens, PHP and API callers; a bad one is refused with one
line saying why, never stored. The characters allowed are printable ASCII
without space, quotes, backslash or the characters that make names awkward in
URLs, logs and JSON, so a name reads the same everywhere it is shown.
"""

import re

MAX_CHANNEL_LENGTH = 255
ALLOWED_CHARACTERS = "A-Z a-z 0-9 and _ - . : @ / = + # ! $ * , ; ~"
_ALLOWED = re.compile(r"[A-Za-z0-9_\-.:@/=+#!$*,;~]+\Z")


class ChannelNameError(ValueError):
    """A channel name that cannot be used; the message is one line."""


def check_channel(name):
    """`name` if it is a usable channel name, else ChannelNameError."""
    if not isinstance(name, str):
        raise ChannelNameError("a channel name must be a string, not %s" % type(name).__name__)
    if not name:
        raise ChannelNameError("a channel name must not be empty")
    if len(name) > MAX_CHANNEL_LENGTH:
        raise ChannelNameError("channel name longer than %d characters" % MAX_CHANNEL_LENGTH)
    if not _ALLOWED.match(name):
        raise ChannelNameError("channel name %r has a character outside %s"
                               % (name[:40], ALLOWED_CHARACTERS))
    return name
