"""Automatic certificates from an ACME CA (Let's Encrypt): ``--tls-mode automate``.

settings.py (the validated ACME options), errors.py (AcmeError) -> state.py
(the state directory and its certificate cache) -> http01.py (certbot, standalone) or dns01.py
(simple-acme-dns, in-process) with providers.py (rfc2136, exec) ->
renewal.py (start-up decision and the renewal greenlet).

ACME depends on TLS (it fills the TLS layer's CertificateHolder), never the
reverse; server.py imports renewal.py only in automate mode.
"""
