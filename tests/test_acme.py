"""ACME for real: certificates from pebble over HTTP-01 (certbot) and DNS-01 (exec, rfc2136).

These drive the certificate manager in the test process against the pebble,
pebble-challtestsrv and BIND 9 of acme_servers.py; test_acme_bridge.py runs
the whole bridge in automate mode.
"""

import dataclasses
import logging
import os
import socket
import stat
import sys

import gevent
import pytest
from cryptography import x509

from acme_servers import (BLOCKED_DOMAIN, EAB_KEY_ID, EAB_MAC_KEY, ELSEWHERE_DOMAIN,
                          RFC2136_ZONE, TSIG_KEY_NAME, TSIG_SECRET, Pebble,
                          acme_folder, challtestsrv, named, pebble,  # noqa: F401 (fixtures)
                          pebble_with_named, rate_limited_ca, throwaway_ca)
from greenbridge.acme.errors import AcmeError
from greenbridge.acme.renewal import CertificateManager
from greenbridge.acme.settings import AcmeSettings
from greenbridge.tls.holder import CertificateHolder
from support import wait_until

HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "acme", "challtestsrv_hook.py")


def http01_settings(pebble, state_dir, domains=("a.test",), **overrides):
    values = dict(domains=tuple(domains), key_type="p256", state_dir=str(state_dir),
                  directory=pebble.directory, ca_bundle=pebble.ca_bundle,
                  http01_port=pebble.http01_port, http01_address="127.0.0.1",
                  environment=dict(os.environ))
    values.update(overrides)
    return AcmeSettings(**values)


def exec_settings(pebble, challtestsrv, state_dir, domains, **overrides):
    overrides.setdefault("resolvers", (("127.0.0.1", challtestsrv.dns_port),))
    return http01_settings(
        pebble, state_dir, domains, dns_provider="exec",
        dns_params={"command": "%s %s %d" % (sys.executable, HOOK,
                                             challtestsrv.management_port)}, **overrides)


def assert_issued_by(pebble, certificate_pem):
    """The leaf chains up to the root this pebble generated at start-up."""
    root, intermediate = [x509.load_pem_x509_certificate(pebble.management_get(path))
                          for path in ("/roots/0", "/intermediates/0")]
    leaf = x509.load_pem_x509_certificate(certificate_pem)
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)


def test_http01_with_certbot_issues_a_certificate_that_chains_to_pebble(pebble, tmp_path, caplog):
    caplog.set_level(logging.INFO, "greenbridge")
    state_dir = tmp_path / "state"
    holder = CertificateHolder()
    manager = CertificateManager(http01_settings(pebble, state_dir, ("a.test", "b.test")),
                                 holder)
    manager.start()

    assert sorted(holder.domains) == ["a.test", "b.test"]
    assert_issued_by(pebble, manager.current.chain_pem)
    assert holder.serial == manager.current.serial
    steps = [record.getMessage() for record in caplog.records]
    for step in ("requesting a certificate for a.test, b.test", "challenge published",
                 "validated and issued", "next renewal due"):
        assert any(step in line for line in steps), step

    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    cached = state_dir / "certificates"
    key_files = list(cached.glob("*/privkey.pem"))
    assert len(key_files) == 1
    assert stat.S_IMODE(os.stat(key_files[0]).st_mode) == 0o600

    # Forced again: certbot reuses its account, the certificate is new.
    first_serial = holder.serial
    CertificateManager(http01_settings(pebble, state_dir, ("a.test", "b.test"), force=True),
                       holder).start()
    assert holder.serial != first_serial
    accounts = list((state_dir / "certbot" / "config" / "accounts").glob("*/*/*"))
    assert len(accounts) == 1, accounts


def test_a_cached_certificate_is_served_without_asking_the_ca(throwaway_ca, challtestsrv,
                                                             acme_folder, tmp_path, caplog):
    caplog.set_level(logging.INFO, "greenbridge")
    own_pebble = Pebble(acme_folder, "pebble-cache", challtestsrv.dns_port, throwaway_ca)
    try:
        settings = http01_settings(own_pebble, tmp_path / "state")
        first = CertificateHolder()
        CertificateManager(settings, first).start()
    finally:
        own_pebble.stop()
    caplog.clear()

    # The CA is gone: only the cache can serve this.
    second = CertificateHolder()
    CertificateManager(settings, second).start()
    assert second.serial == first.serial
    messages = [record.getMessage() for record in caplog.records]
    assert not any("requesting" in line for line in messages), messages
    assert any("cached in" in line for line in messages), messages

    # Other domains than the cached certificate's: a new one is needed, and the CA is down.
    with pytest.raises(AcmeError, match="cannot reach the ACME server"):
        CertificateManager(http01_settings(own_pebble, tmp_path / "state", ("other.test",)),
                           CertificateHolder()).start()


def test_dns01_exec_hook_publishes_through_challtestsrv_for_a_wildcard(
        pebble, challtestsrv, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, "greenbridge")
    hook_log = tmp_path / "hook.log"
    settings = exec_settings(pebble, challtestsrv, tmp_path / "state",
                             ("wild.test", "*.wild.test"), key_type="p384",
                             environment=dict(os.environ, HOOK_LOG=str(hook_log)))
    holder = CertificateHolder()
    manager = CertificateManager(settings, holder)
    manager.start()

    assert sorted(holder.domains) == ["*.wild.test", "wild.test"]
    assert manager.current.key_type == "p384"
    assert_issued_by(pebble, manager.current.chain_pem)
    calls = hook_log.read_text().splitlines()
    # A domain and its wildcard share one record name, with two values.
    presents = [line for line in calls if line.startswith("present _acme-challenge.wild.test ")]
    cleanups = [line for line in calls if line.startswith("cleanup _acme-challenge.wild.test ")]
    assert len(presents) == 2 and len(cleanups) == 2, calls
    assert any("challenge records removed" in record.getMessage() for record in caplog.records)
    account_files = list((tmp_path / "state" / "accounts").glob("*.json"))
    assert len(account_files) == 1
    assert stat.S_IMODE(os.stat(account_files[0]).st_mode) == 0o600

    # Renewal with the same account: no second registration.
    caplog.clear()
    CertificateManager(exec_settings(pebble, challtestsrv, tmp_path / "state",
                                     ("wild.test", "*.wild.test"), key_type="p384",
                                     force=True), holder).start()
    assert not any("registered ACME account" in record.getMessage()
                   for record in caplog.records)
    assert len(list((tmp_path / "state" / "accounts").glob("*.json"))) == 1


def test_dns01_rfc2136_updates_bind_with_tsig_and_removes_the_records(
        pebble_with_named, named, tmp_path):
    domain = "host." + RFC2136_ZONE
    settings = http01_settings(
        pebble_with_named, tmp_path / "state", (domain,), key_type="rsa2048",
        dns_provider="rfc2136",
        dns_params={"server": "127.0.0.1", "port": str(named.port), "key_name": TSIG_KEY_NAME,
                    "key_secret": TSIG_SECRET},
        resolvers=(("127.0.0.1", named.port),))
    holder = CertificateHolder()
    manager = CertificateManager(settings, holder)
    manager.start()
    assert holder.domains == [domain]
    assert manager.current.key_type == "rsa2048"
    assert_issued_by(pebble_with_named, manager.current.chain_pem)
    assert named.txt("_acme-challenge." + domain) == []


def test_rfc2136_with_a_wrong_tsig_key_says_so(pebble_with_named, named, tmp_path):
    settings = http01_settings(
        pebble_with_named, tmp_path / "state", ("bad." + RFC2136_ZONE,),
        dns_provider="rfc2136",
        dns_params={"server": "127.0.0.1", "port": str(named.port), "key_name": TSIG_KEY_NAME,
                    "key_secret": "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCAzMmI="},
        resolvers=(("127.0.0.1", named.port),))
    with pytest.raises(AcmeError, match=r"DNS update of TXT _acme-challenge\.bad\.rfc2136\.test"):
        CertificateManager(settings, CertificateHolder()).start()


def test_records_are_removed_when_propagation_never_succeeds(pebble, challtestsrv, named,
                                                            tmp_path):
    hook_log = tmp_path / "hook.log"
    # Published at challtestsrv, but checked at BIND, which never sees them.
    settings = exec_settings(pebble, challtestsrv, tmp_path / "state", ("late.test",),
                             resolvers=(("127.0.0.1", named.port),), propagation_timeout=3,
                             environment=dict(os.environ, HOOK_LOG=str(hook_log)))
    with pytest.raises(AcmeError, match="TXT records"):
        CertificateManager(settings, CertificateHolder()).start()
    calls = hook_log.read_text().split()
    assert calls.count("present") == 1 and calls.count("cleanup") == 1


def test_a_failing_exec_hook_is_reported_with_its_output(pebble, challtestsrv, tmp_path):
    settings = exec_settings(pebble, challtestsrv, tmp_path / "state", ("hook.test",),
                             environment=dict(os.environ, HOOK_FAIL="present"))
    with pytest.raises(AcmeError, match=r"DNS hook .* present _acme-challenge\.hook\.test "
                                        r"failed \(exit status 1\): refusing to present"):
        CertificateManager(settings, CertificateHolder()).start()


@pytest.mark.parametrize("domain,message", [
    (ELSEWHERE_DOMAIN, r"the CA could not validate elsewhere\.test \(connection\): .*127\.0\.0\.2"
                       r".* does elsewhere\.test resolve to this server"),
    (BLOCKED_DOMAIN, r"the CA refused: .*forbidden by policy.*blocked\.test"),
])
def test_http01_failures_say_what_the_ca_said(pebble, tmp_path, domain, message):
    with pytest.raises(AcmeError, match=message):
        CertificateManager(http01_settings(pebble, tmp_path / "state", (domain,)),
                           CertificateHolder()).start()


def test_dns01_ca_refusal_is_reported(pebble, challtestsrv, tmp_path):
    settings = exec_settings(pebble, challtestsrv, tmp_path / "state", (BLOCKED_DOMAIN,))
    with pytest.raises(AcmeError, match=r"the CA refused \(rejectedIdentifier\): .*blocked\.test"):
        CertificateManager(settings, CertificateHolder()).start()


def test_http01_port_in_use_is_reported_before_certbot_runs(pebble, tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        settings = http01_settings(pebble, tmp_path / "state",
                                   http01_port=squatter.getsockname()[1])
        with pytest.raises(AcmeError, match=r"--tls-http01-port \d+: address already in use on "
                                            r"127\.0\.0\.1 \(certbot answers the CA's HTTP-01 "
                                            r"challenge there"):
            CertificateManager(settings, CertificateHolder()).start()


def test_external_account_binding(throwaway_ca, challtestsrv, acme_folder, tmp_path):
    eab_pebble = Pebble(acme_folder, "pebble-eab", challtestsrv.dns_port, throwaway_ca, eab=True)
    try:
        without = exec_settings(eab_pebble, challtestsrv, tmp_path / "without", ("eab.test",))
        with pytest.raises(AcmeError, match="externalAccountRequired|external account"):
            CertificateManager(without, CertificateHolder()).start()
        for state, settings in [
                ("dns", exec_settings(eab_pebble, challtestsrv, tmp_path / "dns", ("eab.test",),
                                      eab_key_id=EAB_KEY_ID, eab_mac_key=EAB_MAC_KEY)),
                ("http", http01_settings(eab_pebble, tmp_path / "http", ("eab.test",),
                                         eab_key_id=EAB_KEY_ID, eab_mac_key=EAB_MAC_KEY))]:
            holder = CertificateHolder()
            CertificateManager(settings, holder).start()
            assert holder.domains == ["eab.test"], state
    finally:
        eab_pebble.stop()


def test_renewal_greenlet_renews_inside_the_window_and_keeps_the_old_one_on_failure(
        pebble, challtestsrv, tmp_path, caplog):
    caplog.set_level(logging.INFO, "greenbridge")
    # A window as long as the lifetime: every check finds the certificate due.
    settings = exec_settings(pebble, challtestsrv, tmp_path / "state", ("renew.test",),
                             renewal_window_ratio=1.0, renewal_check_interval=0.2)
    holder = CertificateHolder()
    manager = CertificateManager(settings, holder)
    manager.start()
    first_serial = holder.serial
    # Another worker's manager on the same state directory only follows the cache.
    follower_holder = CertificateHolder()
    follower = CertificateManager(dataclasses.replace(settings, renewal_window_ratio=0.33),
                                  follower_holder)
    follower.start()
    assert follower_holder.serial == first_serial
    renewals = [gevent.spawn(manager.run_renewals),
                gevent.spawn(follower.run_renewals, renews=False)]
    try:
        # (gevent.sleep between looks: the renewal greenlets run in this process.)
        wait_until(lambda: holder.serial != first_serial and
                   follower_holder.serial == holder.serial, 120,
                   lambda: "a renewal the follower adopted (serials %x, %x; first %x)"
                   % (holder.serial, follower_holder.serial, first_serial), pause=gevent.sleep)
    finally:
        gevent.killall(renewals)
    assert_issued_by(pebble, manager.current.chain_pem)

    # The CA unreachable: the renewal fails, is retried, and the current certificate stays.
    broken = CertificateManager(exec_settings(
        pebble, challtestsrv, tmp_path / "state", ("renew.test",), renewal_window_ratio=1.0,
        renewal_check_interval=0.2, directory="https://127.0.0.1:1/dir"), holder)
    broken.current = manager.current
    serving = holder.serial
    caplog.clear()
    renewals = gevent.spawn(broken.run_renewals)
    try:
        wait_until(lambda: sum("renewal failed" in record.getMessage()
                               for record in caplog.records) >= 2, 120,
                   "two failed renewals logged", pause=gevent.sleep)
    finally:
        renewals.kill()
    failure = next(record.getMessage() for record in caplog.records
                   if "renewal failed" in record.getMessage())
    assert "cannot reach the ACME server https://127.0.0.1:1/dir" in failure
    assert "retrying in 0.2s" in failure and "keeps serving" in failure
    assert holder.serial == serving



def test_rate_limit_is_reported_as_such(rate_limited_ca, challtestsrv, pebble, tmp_path):
    for settings in [
            http01_settings(pebble, tmp_path / "http", directory=rate_limited_ca.directory),
            exec_settings(pebble, challtestsrv, tmp_path / "dns", ("a.test",),
                          directory=rate_limited_ca.directory)]:
        with pytest.raises(AcmeError, match=r"rate limit hit at the CA: .*too many "
                                            r"certificates \(5\) already issued"):
            CertificateManager(settings, CertificateHolder()).start()


def test_dns01_order_with_names_the_ca_validated_recently(challtestsrv, acme_folder,
                                                         throwaway_ca, tmp_path, caplog):
    # Like Let's Encrypt within its reuse period: every valid authorization is reused.
    reusing = Pebble(acme_folder, "pebble-reuse", challtestsrv.dns_port, throwaway_ca,
                     authz_reuse=100)
    try:
        caplog.set_level(logging.INFO, "greenbridge")
        hook_log = tmp_path / "hook.log"
        environment = dict(os.environ, HOOK_LOG=str(hook_log))
        holder = CertificateHolder()
        first = CertificateManager(exec_settings(reusing, challtestsrv, tmp_path / "state",
                                                 ("reuse.test",), environment=environment),
                                   holder)
        first.start()
        second = CertificateManager(exec_settings(reusing, challtestsrv, tmp_path / "state",
                                                  ("reuse.test",), environment=environment,
                                                  force=True), holder)
        second.start()
    finally:
        reusing.stop()
    assert second.current.serial != first.current.serial
    assert holder.serial == second.current.serial
    presents = [line for line in hook_log.read_text().splitlines()
                if line.startswith("present ")]
    assert len(presents) == 1, presents  # the second order had nothing to prove
    assert any("nothing to publish" in record.getMessage() for record in caplog.records)
