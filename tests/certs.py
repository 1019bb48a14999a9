"""Certificates for the TLS tests: CAs, server and client certificates, written as PEM files."""

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


class Issued:
    """A certificate and its key, with their PEM bytes."""

    def __init__(self, certificate, key, issuer=None):
        self.certificate = certificate
        self.key = key
        self.issuer = issuer

    @property
    def cert_pem(self):
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self):
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def chain_pem(self):
        """Leaf first, then the intermediates (not the root)."""
        chain = self.cert_pem
        issuer = self.issuer
        while issuer is not None and issuer.issuer is not None:
            chain += issuer.cert_pem
            issuer = issuer.issuer
        return chain

    def write(self, directory, name, chain=False):
        """Write name.crt and name.key; return their paths."""
        cert_path, key_path = directory / (name + ".crt"), directory / (name + ".key")
        cert_path.write_bytes(self.chain_pem if chain else self.cert_pem)
        key_path.write_bytes(self.key_pem)
        return str(cert_path), str(key_path)

    def issue(self, common_name, names=(), client=False, not_before=None, not_after=None,
              ca=False):
        """A certificate signed by this one."""
        return _make(common_name, names, self, client, not_before, not_after, ca)


def make_ca(common_name="greenbridge test CA"):
    return _make(common_name, (), None, False, None, None, True)


def make_self_signed_client(common_name):
    """A client certificate that signs itself: no CA vouches for it."""
    return _make(common_name, (), None, True, None, None, False)


# DER, written out by hand: version [0] EXPLICIT INTEGER 2 (v3) and 1 (v2);
# AlgorithmIdentifier ecdsa-with-SHA256 (1.2.840.10045.4.3.2).
_VERSION_3 = bytes.fromhex("a003020102")
_VERSION_2 = bytes.fromhex("a003020101")
_ECDSA_WITH_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


def make_version_2_certificate(common_name):
    """A self-signed EC certificate marked X.509 v2 (no extensions), correctly signed.

    OpenSSL reads v2 certificates; cryptography refuses them (InvalidVersion).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    version_3 = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                 .public_key(key.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(NOW - DAY).not_valid_after(NOW + 30 * DAY)
                 .sign(key, hashes.SHA256()))
    tbs = version_3.tbs_certificate_bytes
    header_length = 2 + (tbs[1] & 0x7F if tbs[1] & 0x80 else 0)
    assert tbs[header_length:header_length + 5] == _VERSION_3
    tbs = tbs[:header_length] + _VERSION_2 + tbs[header_length + 5:]
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    der = _der(0x30, tbs + _ECDSA_WITH_SHA256 + _der(0x03, b"\x00" + signature))
    return der, key


def _der(tag, content):
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content


def subject_alternative_name(name):
    """An IP address entry for an address, else a DNS name entry."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _make(common_name, names, issuer, client, not_before, not_after, ca):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "greenbridge tests")])
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - DAY)
        .not_valid_after(not_after or NOW + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([subject_alternative_name(name) for name in names]),
            critical=False)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key, issuer)
