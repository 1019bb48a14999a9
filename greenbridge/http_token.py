"""HTTP tokens (RFC 9110 5.6.2): the grammar of methods, header names and subprotocol names.

A leaf: the handshake checks request methods with it, the settings check
``--subprotocol`` names.
"""

import re

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def is_token(text):
    return _TOKEN.fullmatch(text) is not None
