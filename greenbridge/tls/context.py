"""The pyOpenSSL server context: versions, ciphers, groups, ALPN, client certificates.

pyOpenSSL rather than the ssl module: ``ssl`` cannot ask for a client
certificate and then accept it unverified (``request``, ``require``), and
cannot list several key-exchange groups. A context is built for each served
certificate (see layer.py), so a reload never changes a running handshake.
"""

from OpenSSL import SSL

from greenbridge.tls.openssl_binding import ask_for_certificate_accepting_any, set_groups_list

MIN_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
SESSION_ID_CONTEXT = b"greenbridge"


class TLSOptionError(Exception):
    """A --tls-* option OpenSSL cannot use; the message is one line."""


def build_context(config, served, keylog_callback=None):
    """A server context for `served` (a ServedCertificate) and the --tls-* options."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(MIN_VERSIONS[config.tls_min_version])
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE
                        | SSL.OP_NO_RENEGOTIATION)
    _set_ciphers(context, config.tls_ciphers)
    _set_groups(context, config.tls_curves)
    if config.tls_alpn:
        context.set_alpn_select_callback(_alpn_selector(config.tls_alpn))
    if keylog_callback is not None:
        context.set_keylog_callback(keylog_callback)
    _set_client_auth(context, config.tls_client_auth, config.tls_client_auth_ca)
    context.use_certificate(served.leaf)
    for intermediate in served.chain[1:]:
        context.add_extra_chain_cert(intermediate)
    context.use_privatekey(served.key)
    # Needed for session resumption once client certificates are asked for.
    context.set_session_id(SESSION_ID_CONTEXT)
    return context


def _set_ciphers(context, names):
    # OpenSSL keeps TLS 1.3 suites (TLS_*) apart from the older cipher list; a
    # version with no name given keeps OpenSSL's defaults.
    tls13 = [name for name in names if name.startswith("TLS_")]
    tls12 = [name for name in names if not name.startswith("TLS_")]
    for name in names:
        # OpenSSL skips unknown names in a list as long as one is known; check each.
        probe = SSL.Context(SSL.TLS_SERVER_METHOD)
        try:
            if name in tls13:
                probe.set_tls13_ciphersuites(name.encode("ascii"))
            else:
                probe.set_cipher_list(name.encode("ascii"))
        except (SSL.Error, UnicodeError):
            raise TLSOptionError("--tls-ciphers: unknown cipher suite %r" % name) from None
    if tls13:
        context.set_tls13_ciphersuites(":".join(tls13).encode("ascii"))
    if tls12:
        context.set_cipher_list(":".join(tls12).encode("ascii"))


def _set_groups(context, names):
    for name in names:
        probe = SSL.Context(SSL.TLS_SERVER_METHOD)
        if not set_groups_list(probe, [name]):
            raise TLSOptionError("--tls-curves: unknown key-exchange group %r" % name)
    if names and not set_groups_list(context, names):
        raise TLSOptionError("--tls-curves: OpenSSL refused %r" % ":".join(names))


def _alpn_selector(protocols):
    offered_by_us = [protocol.encode("ascii") for protocol in protocols]

    def select(_connection, offered_by_client):
        # Our order of preference; no common protocol goes on without ALPN.
        for protocol in offered_by_us:
            if protocol in offered_by_client:
                return protocol
        return SSL.NO_OVERLAPPING_PROTOCOLS

    return select


def _set_client_auth(context, mode, ca_file):
    if ca_file:
        try:
            context.load_verify_locations(ca_file.encode())
            # The CA names go into the certificate request, so clients pick a matching one.
            context.load_client_ca(ca_file.encode())
        except SSL.Error:
            raise TLSOptionError("--tls-client-auth-ca: %r holds no usable PEM CA certificate"
                                 % ca_file) from None
    if mode == "none":
        context.set_verify(SSL.VERIFY_NONE)
    elif mode == "request":
        ask_for_certificate_accepting_any(context, SSL.VERIFY_PEER)
    elif mode == "require":
        ask_for_certificate_accepting_any(context,
                                          SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    elif mode == "verify-if-given":
        context.set_verify(SSL.VERIFY_PEER)
    elif mode == "require-and-verify":
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    else:
        raise TLSOptionError("--tls-client-auth: unknown mode %r" % mode)
