"""What greenbridge needs from OpenSSL that pyOpenSSL does not wrap.

The one place that reaches into pyOpenSSL's private parts: the binding it
ships (``OpenSSL._util``), ``Context._context`` and ``Connection._ssl``.
Checked against pyOpenSSL 26.4.0, cryptography 50.0.2 (its OpenSSL 4.0.3);
tests/test_adapters.py checks what is used here.
"""

from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

CHECKED_AGAINST = {"pyOpenSSL": "26.4.0", "cryptography": "50.0.2"}


def set_groups_list(context, names):
    """SSL_CTX_set1_curves_list; False if OpenSSL refuses the list."""
    try:
        encoded = ":".join(names).encode("ascii")
    except UnicodeError:
        return False
    return _lib.SSL_CTX_set1_curves_list(context._context, encoded) == 1


# Accepts every certificate and leaves OpenSSL's verdict alone. pyOpenSSL's own
# callback wrapper resets the error to X509_V_OK whenever the Python callback
# accepts, which would make every accepted certificate look verified.
_ACCEPT_KEEPING_VERDICT = _ffi.callback("int (*)(int, X509_STORE_CTX *)", lambda _ok, _store: 1)


def ask_for_certificate_accepting_any(context, mode):
    """SSL_CTX_set_verify with `mode`: the handshake goes on whatever the chain's verdict.

    OpenSSL still verifies the chain and stores the verdict in the session
    (SSL_SESSION's verify_result), where peer_certificate_verified reads it.
    """
    _lib.SSL_CTX_set_verify(context._context, mode, _ACCEPT_KEEPING_VERDICT)


def peer_certificate_verified(connection):
    """SSL_get_verify_result is X509_V_OK: the peer's chain verified against the CA file.

    In the verify modes a certificate that does not verify ends the handshake,
    so only request/require connections can carry an unverified one. On a
    resumed session (TLS 1.2 session ID or ticket, TLS 1.3 PSK) OpenSSL sets it
    from the session (ssl_get_prev_session), so it is the verdict of the
    handshake that first saw the certificate, never a default.
    """
    return _lib.SSL_get_verify_result(connection._ssl) == _lib.X509_V_OK
