"""The certificate holder that manual mode, reloads and ACME renewals share."""

import datetime
import logging

import pytest

from certs import DAY, NOW, make_ca
from greenbridge.tls.holder import CertificateError, CertificateHolder
from greenbridge.tls.selfsigned import self_signed_pair
from support import KEY_TYPES


@pytest.fixture(scope="module")
def ca():
    return make_ca()


def test_install_serves_the_pair_and_tells_listeners(ca):
    leaf = ca.issue("example.test", ["example.test", "*.example.test"])
    holder = CertificateHolder()
    seen = []
    holder.add_listener(lambda installed: seen.append(installed.serial))
    holder.install(leaf.chain_pem, leaf.key_pem, "test")
    assert holder.serial == leaf.certificate.serial_number
    assert holder.domains == ["example.test", "*.example.test"]
    assert holder.not_after == leaf.certificate.not_valid_after_utc
    assert holder.not_before.tzinfo == datetime.timezone.utc
    assert seen == [leaf.certificate.serial_number]


def test_a_key_of_another_certificate_is_refused_and_the_old_pair_stays(ca):
    good, other = ca.issue("good.test", ["good.test"]), ca.issue("other.test", ["other.test"])
    holder = CertificateHolder()
    holder.install(good.cert_pem, good.key_pem, "good")
    with pytest.raises(CertificateError, match="does not match the certificate"):
        holder.install(good.cert_pem, other.key_pem, "mixed")
    assert holder.serial == good.certificate.serial_number


@pytest.mark.parametrize("chain_pem,key_pem,message", [
    (b"", None, "no valid PEM certificate"),
    (b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", None,
     "no valid PEM certificate"),
    (None, b"garbage", "no usable PEM private key"),
])
def test_garbage_is_refused_with_one_line(ca, chain_pem, key_pem, message):
    leaf = ca.issue("x.test", ["x.test"])
    holder = CertificateHolder()
    with pytest.raises(CertificateError, match=message) as refused:
        holder.install(chain_pem if chain_pem is not None else leaf.cert_pem,
                       key_pem if key_pem is not None else leaf.key_pem, "bad")
    assert "\n" not in str(refused.value)
    assert holder.served is None


def test_load_files_names_the_missing_file(tmp_path, ca):
    cert_path, key_path = ca.issue("x.test", ["x.test"]).write(tmp_path, "x")
    holder = CertificateHolder()
    with pytest.raises(CertificateError, match=r"cannot read key file '.*/missing.key'"):
        holder.load_files(cert_path, str(tmp_path / "missing.key"))
    holder.load_files(cert_path, key_path)
    assert holder.domains == ["x.test"]


def test_an_expired_certificate_is_served_with_a_warning(ca, caplog):
    expired = ca.issue("old.test", ["old.test"], not_before=NOW - 10 * DAY,
                       not_after=NOW - DAY)
    holder = CertificateHolder()
    with caplog.at_level(logging.WARNING, logger="greenbridge.tls"):
        holder.install(expired.cert_pem, expired.key_pem, "old")
    assert holder.serial == expired.certificate.serial_number
    assert "expired on" in caplog.text and "serving it anyway" in caplog.text


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_self_signed_pair_of_every_key_type_installs(key_type):
    chain_pem, key_pem = self_signed_pair(["localhost", "*.example.test", "127.0.0.1"], key_type)
    holder = CertificateHolder()
    holder.install(chain_pem, key_pem, "internal")
    assert holder.domains == ["localhost", "*.example.test"]
