"""The ACME state directory: certificate cache, DNS-01 account, certbot's folders.

Layout (the directory is 0700, every file we write 0600)::

    <state>/certificates/<ca>/fullchain.pem, privkey.pem   the cache, one per CA
    <state>/accounts/<ca>.json                              the DNS-01 account key
    <state>/certbot/{config,work,logs}                      certbot's own (HTTP-01)

``<ca>`` names the ACME directory URL, so a staging certificate is never
served after switching to production.
"""

import datetime
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Tuple
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from greenbridge.acme.errors import AcmeError


def ca_folder_name(directory_url):
    """The cache folder for a CA: its directory URL as a file name, the way certbot does."""
    parts = urlsplit(directory_url)
    return re.sub(r"[^A-Za-z0-9.-]+", "_", parts.netloc) + \
        re.sub(r"[^A-Za-z0-9.-]+", "-", parts.path).rstrip("-")


def key_type_of(private_key):
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "p256", "secp384r1": "p384"}.get(private_key.curve.name,
                                                              private_key.curve.name)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return "rsa%d" % private_key.key_size
    return type(private_key).__name__


@dataclass(frozen=True)
class Certificate:
    """A full chain and its key, with what renewal decisions need."""
    chain_pem: bytes
    key_pem: bytes
    domains: Tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: int
    key_type: str

    @classmethod
    def parse(cls, chain_pem, key_pem):
        """Raises AcmeError when the pair is unreadable or does not belong together."""
        try:
            leaf = x509.load_pem_x509_certificate(chain_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except ValueError as error:
            raise AcmeError("unreadable certificate or key: %s" % error) from None
        if leaf.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo) != \
                key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo):
            raise AcmeError("the private key does not match the certificate")
        try:
            names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            domains = tuple(names.value.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            domains = ()
        return cls(chain_pem, key_pem, domains, leaf.not_valid_before_utc,
                   leaf.not_valid_after_utc, leaf.serial_number, key_type_of(key))

    def covers(self, domains):
        return set(domains) <= set(self.domains)

    def renewal_due(self, window_ratio):
        """When less than `window_ratio` of the lifetime remains."""
        return self.not_after - (self.not_after - self.not_before) * window_ratio


class StateDirectory:
    def __init__(self, path, directory_url):
        self.path = path
        self._ca = ca_folder_name(directory_url)

    def create(self):
        """Make the directory (0700); raises AcmeError when that is impossible."""
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            os.chmod(self.path, 0o700)
        except OSError as error:
            raise AcmeError("cannot create the ACME state directory %s: %s"
                            % (self.path, error.strerror)) from None

    def folder(self, *parts):
        path = os.path.join(self.path, *parts)
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    @property
    def account_path(self):
        return os.path.join(self.folder("accounts"), self._ca + ".json")

    def _certificate_paths(self):
        folder = self.folder("certificates", self._ca)
        return os.path.join(folder, "fullchain.pem"), os.path.join(folder, "privkey.pem")

    def load_certificate(self):
        """The cached Certificate, or None when there is none; AcmeError when it is broken."""
        chain_path, key_path = self._certificate_paths()
        if not (os.path.exists(chain_path) and os.path.exists(key_path)):
            return None
        with open(chain_path, "rb") as chain, open(key_path, "rb") as key:
            return Certificate.parse(chain.read(), key.read())

    def save_certificate(self, certificate):
        chain_path, key_path = self._certificate_paths()
        # The key first: a crash in between leaves a pair that fails to parse, not a wrong one.
        write_private(key_path, certificate.key_pem)
        write_private(chain_path, certificate.chain_pem)


def write_private(path, data):
    """Write a file readable by its owner only (0600), replacing the old one atomically."""
    folder = os.path.dirname(path)
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
