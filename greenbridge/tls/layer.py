"""The TLS side of the server: the certificate for each mode, handshakes, reloads.

Handshakes run in each connection's own greenlet, before HTTP and before any
connection slot is taken, under the server's --handshake-timeout.
"""

import logging
import os
import stat
from dataclasses import dataclass

import gevent
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from greenbridge.logs import format_address
from greenbridge.tls import CertificateError, TLSSetupError
from greenbridge.tls.context import TLSOptionError, build_context
from greenbridge.tls.greensocket import GreenTLSSocket, describe_error
from greenbridge.tls.openssl_binding import peer_certificate_verified
from greenbridge.tls.selfsigned import self_signed_pair

log = logging.getLogger("greenbridge.tls")

# Manual mode: how often the certificate and key files are checked for changes.
FILE_CHECK_INTERVAL = 2.0


class TLSLayer:
    def __init__(self, config, holder, renewer=None):
        """`holder` (a CertificateHolder) serves the certificate to handshakes.

        `renewer` fills it in --tls-mode automate (acme.renewal.CertificateManager,
        made by the caller, so TLS does not depend on ACME): ``start()`` installs
        the first certificate (CertificateError if there is none to have) and
        ``run_renewals(renews)`` keeps it fresh.
        """
        self._config = config
        self.holder = holder
        self._context = None
        self._context_for = None
        self._secrets_log = None
        self._watcher = None
        self._renewer = renewer
        # Manual mode: the files as they were when last read, so that a worker
        # forked later still sees a change made meanwhile.
        self._files_seen = None

    # -- start-up ----------------------------------------------------------

    def load(self):
        """Get the first certificate and check every option; TLSSetupError if anything is bad."""
        config = self._config
        try:
            if config.tls_mode == "internal":
                chain_pem, key_pem = self_signed_pair(config.tls_domains, config.tls_key_type)
                self.holder.install(chain_pem, key_pem, "self-signed (%s)" % config.tls_key_type)
            elif config.tls_mode == "manual":
                self._files_seen = _file_states((config.tls_cert, config.tls_key))
                self.holder.load_files(config.tls_cert, config.tls_key)
            else:
                # From the cache, or from the CA before any listener opens.
                self._renewer.start()
        except CertificateError as error:
            raise TLSSetupError(str(error)) from None
        if config.tls_secrets_log:
            self._open_secrets_log(config.tls_secrets_log)
        try:
            self._current_context()
        except TLSOptionError as error:
            raise TLSSetupError(str(error)) from None

    def start_background(self, renews=True):
        """In each serving process: watch the files (manual) or renew (automate).

        With several workers only one (`renews`) asks the CA; the others adopt
        what it caches.
        """
        config = self._config
        if self._watcher is not None:
            return
        if config.tls_mode == "manual":
            self._watcher = gevent.spawn(self._watch_files, (config.tls_cert, config.tls_key))
        elif config.tls_mode == "automate":
            self._watcher = gevent.spawn(self._renewer.run_renewals, renews)

    def _open_secrets_log(self, path):
        # Whoever reads the file can decrypt the traffic: created for the owner
        # only, whatever the umask, and never appended to if others can read it.
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as error:
            raise TLSSetupError("--tls-secrets-log: cannot open %r: %s"
                                % (path, error.strerror)) from None
        mode = stat.S_IMODE(os.fstat(descriptor).st_mode)
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            os.close(descriptor)
            raise TLSSetupError("--tls-secrets-log: %r can be read by other users (mode %04o); "
                                "chmod 600 it or name a new file" % (path, mode))
        # Unbuffered: a key line is useful only if it is on disk when Wireshark looks.
        self._secrets_log = open(descriptor, "ab", buffering=0)
        log.warning("INSECURE: TLS session secrets are written to %s (--tls-secrets-log); "
                    "anyone who can read it can decrypt the traffic", path)

    def close(self):
        if self._watcher is not None:
            self._watcher.kill()  # also ends a certbot run under way
        if self._secrets_log is not None:
            self._secrets_log.close()

    # -- handshakes --------------------------------------------------------

    def _current_context(self):
        served = self.holder.served
        if served is not self._context_for:
            keylog = self._write_secret if self._secrets_log is not None else None
            self._context = build_context(self._config, served, keylog)
            self._context_for = served
        return self._context

    def _write_secret(self, _connection, line):
        self._secrets_log.write(line + b"\n")

    def accept(self, tcp_socket, address):
        """Run the server handshake; the TLS socket, or None (logged at debug) when it fails.

        The caller bounds the time (--handshake-timeout). On any failure,
        including that deadline, the TCP socket is closed here, through gevent,
        so the loop forgets the descriptor before its number is reused.
        """
        tls_socket = GreenTLSSocket(SSL.Connection(self._current_context(), tcp_socket),
                                    tcp_socket)
        tls_socket.tls.set_accept_state()
        try:
            tls_socket.do_handshake()
        except (OSError, SSL.Error) as error:
            log.debug("TLS handshake with %s failed: %s", format_address(address),
                      getattr(error, "strerror", None) or describe_error(error))
            tcp_socket.close()
            return None
        except BaseException:
            tcp_socket.close()
            raise
        return tls_socket

    # -- reloading ---------------------------------------------------------

    def reload(self, reason):
        """Read the certificate again (manual mode); a bad pair keeps the old one serving."""
        config = self._config
        if config.tls_mode != "manual":
            log.info("%s: nothing to reload in --tls-mode %s", reason, config.tls_mode)
            return
        try:
            self._files_seen = _file_states((config.tls_cert, config.tls_key))
            self.holder.load_files(config.tls_cert, config.tls_key)
        except CertificateError as error:
            log.error("%s: certificate not reloaded, the old one stays: %s", reason, error)

    def _watch_files(self, paths):
        while True:
            gevent.sleep(FILE_CHECK_INTERVAL)
            # A pair half-written is refused; the next change (the other file) retries.
            if _file_states(paths) != self._files_seen:
                self.reload("certificate files changed")


def _file_states(paths):
    states = []
    for path in paths:
        try:
            status = os.stat(path)
            states.append((status.st_ino, status.st_size, status.st_mtime_ns))
        except OSError:
            states.append(None)
    return states


class UnreadableClientCertificate(Exception):
    """OpenSSL took the client's certificate, cryptography cannot read it (e.g. X.509 v2)."""


@dataclass(frozen=True)
class ClientCertificate:
    """What PHP is told about a client's certificate (php_environment.py writes it out)."""
    subject: str  # RFC 4514
    issuer: str  # RFC 4514
    serial_number: int
    der: bytes
    pem: str
    verified: bool  # OpenSSL's verdict on the chain, kept in the TLS session


def read_client_certificate(tls):
    """The certificate the client presented on a pyOpenSSL connection, or None.

    UnreadableClientCertificate if the certificate cannot be described to PHP.
    """
    try:
        certificate = tls.get_peer_certificate(as_cryptography=True)
        if certificate is None:
            return None
        return ClientCertificate(
            subject=certificate.subject.rfc4514_string(),
            issuer=certificate.issuer.rfc4514_string(),
            serial_number=certificate.serial_number,
            der=certificate.public_bytes(serialization.Encoding.DER),
            pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
            verified=peer_certificate_verified(tls),
        )
    except (ValueError, x509.InvalidVersion) as error:
        # cryptography parses more strictly than OpenSSL, partly only when a field is read.
        raise UnreadableClientCertificate("%s: %s" % (type(error).__name__, error)) from None
