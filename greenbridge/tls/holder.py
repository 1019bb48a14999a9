"""The one place that holds the certificate and key served to new TLS handshakes.

Manual files, the self-signed generator, SIGHUP/file-change reloads and ACME
renewals all go through ``install``: a pair is checked first and swapped in
whole, so a bad new pair never replaces a good one, and a handshake never
sees half of each.
"""

import datetime
import logging
from dataclasses import dataclass
from typing import Tuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from greenbridge.tls import CertificateError

log = logging.getLogger("greenbridge.tls")


@dataclass(frozen=True)
class ServedCertificate:
    """A checked pair: the chain (leaf first) and its private key, both cryptography objects."""
    chain: Tuple[x509.Certificate, ...]
    key: object
    source: str

    @property
    def leaf(self):
        return self.chain[0]


class CertificateHolder:
    def __init__(self):
        self._served = None
        self._listeners = []

    @property
    def served(self):
        """The ServedCertificate new handshakes get (None before the first install)."""
        return self._served

    @property
    def not_before(self):
        return self._leaf().not_valid_before_utc

    @property
    def not_after(self):
        return self._leaf().not_valid_after_utc

    @property
    def serial(self):
        return self._leaf().serial_number

    @property
    def domains(self):
        return subject_dns_names(self._leaf())

    def add_listener(self, callback):
        """Call ``callback(holder)`` after each successful install."""
        self._listeners.append(callback)

    def install(self, chain_pem, key_pem, source):
        """Check the pair and serve it to the next handshakes; CertificateError if bad."""
        served = parse_pair(chain_pem, key_pem, source)
        self._served = served
        leaf = served.leaf
        log.info("serving certificate serial %x for %s, valid until %s (from %s)",
                 leaf.serial_number, ", ".join(_subject_names(leaf)) or "(no names)",
                 leaf.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC"), source)
        for callback in list(self._listeners):
            try:
                callback(self)
            except Exception:  # a listener must not undo a good install
                log.exception("certificate listener %r failed", callback)

    def load_files(self, cert_path, key_path):
        """Read a PEM chain file and a PEM key file and install them."""
        chain_pem = _read_file("certificate", cert_path)
        key_pem = _read_file("key", key_path)
        self.install(chain_pem, key_pem, "%s and %s" % (cert_path, key_path))

    def _leaf(self):
        if self._served is None:
            raise CertificateError("no certificate installed yet")
        return self._served.leaf


def parse_pair(chain_pem, key_pem, source):
    """Parse and check a PEM chain and key; return a ServedCertificate or raise CertificateError."""
    try:
        chain = tuple(x509.load_pem_x509_certificates(chain_pem))
    except ValueError:
        raise CertificateError("%s: no valid PEM certificate found" % source) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertificateError("%s: the private key is encrypted (give it without a passphrase)"
                               % source) from None
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CertificateError("%s: no usable PEM private key (%s)"
                               % (source, _first_line(error))) from None
    if _public_key_der(key.public_key()) != _public_key_der(chain[0].public_key()):
        raise CertificateError("%s: the private key does not match the certificate" % source)
    _warn_if_not_valid_now(chain[0], source)
    return ServedCertificate(chain=chain, key=key, source=source)


def subject_dns_names(certificate):
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return names.value.get_values_for_type(x509.DNSName)


def _subject_names(certificate):
    """DNS names and IP addresses, for the log."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in names.value]


def _warn_if_not_valid_now(leaf, source):
    now = datetime.datetime.now(datetime.timezone.utc)
    if leaf.not_valid_after_utc < now:
        log.warning("certificate from %s expired on %s; serving it anyway",
                    source, leaf.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC"))
    elif leaf.not_valid_before_utc > now:
        log.warning("certificate from %s is not valid before %s; serving it anyway",
                    source, leaf.not_valid_before_utc.strftime("%Y-%m-%d %H:%M UTC"))


def _public_key_der(public_key):
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _read_file(what, path):
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise CertificateError("cannot read %s file %r: %s" % (what, path, error.strerror)) \
            from None


def _first_line(error):
    return (str(error).splitlines() or [type(error).__name__])[0]
