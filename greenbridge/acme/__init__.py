"""Automatic certificates from an ACME CA (Let's Encrypt): ``--tls-mode automate``.

settings.py (the validated ACME options) -> state.py (the state directory and
its certificate cache) -> http01.py (certbot, standalone) or dns01.py
(simple-acme-dns, in-process) with providers.py (rfc2136, exec) ->
renewal.py (start-up decision and the renewal greenlet).

ACME depends on TLS (it fills the TLS layer's CertificateHolder), never the
reverse; server.py imports renewal.py only in automate mode.
"""

from greenbridge.tls import CertificateError


class AcmeError(CertificateError):
    """Obtaining a certificate failed; the message is one line for the log.

    To the TLS layer a CA that gives no certificate is a certificate source
    that failed, as an unreadable file is: hence a CertificateError.
    """
