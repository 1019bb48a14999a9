"""What goes wrong in obtaining a certificate, as the TLS layer sees it.

Its own module, so that acme/settings.py (part of the settings layer, which
imports nothing of the server) does not load the TLS package with the ACME one.
"""

from greenbridge.tls import CertificateError


class AcmeError(CertificateError):
    """Obtaining a certificate failed; the message is one line for the log.

    To the TLS layer a CA that gives no certificate is a certificate source
    that failed, as an unreadable file is: hence a CertificateError.
    """
