"""wss://: certificates (holder, self-signed), the pyOpenSSL context, handshakes, reload.

Only what is here may be imported while TLS is off: the rest of the package
loads cryptography and pyOpenSSL, which a plain ws:// server never imports
(server.py imports the layer when --tls-mode is not none). TLS does not
depend on ACME: greenbridge.acme fills the layer's CertificateHolder.
"""

# --tls-key-type values (declared with the settings); the self-signed generator makes
# each (an ACME CA signs fewer).
from greenbridge.settings.values import TLS_KEY_TYPES as KEY_TYPES  # noqa: E402


class CertificateError(Exception):
    """A certificate/key pair cannot be served, or none could be had; one line for the log."""


class TLSSetupError(Exception):
    """TLS cannot start; the message is one line."""
