"""Which certificate to serve at start-up, and the greenlet that renews it.

Start-up: a cached certificate that covers every domain, has the wanted key
type and is outside the renewal window is served at once; otherwise one is
obtained before the listener opens (--tls-force-acme always obtains one).
Afterwards the renewal greenlet checks every --tls-renewal-check-interval and
renews inside the window. A failed renewal is logged with the CA's error and
retried with back-off while the old certificate keeps serving.
"""

import datetime
import logging

import gevent

from greenbridge.acme.errors import AcmeError
from greenbridge.acme.state import StateDirectory
from greenbridge.tls import CertificateError

log = logging.getLogger("greenbridge.acme")

# Seconds between attempts after a failed renewal (the last one repeats),
# never longer than the check interval.
RETRY_DELAYS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600)


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


class CertificateManager:
    """Owns the state directory and renews what the TLS layer's CertificateHolder serves.

    The TLS layer's certificate source in automate mode: ``start`` (AcmeError,
    a CertificateError, when it gets no certificate) and ``run_renewals``.
    """

    def __init__(self, settings, holder):
        self.settings = settings
        self.state = StateDirectory(settings.state_dir, settings.directory)
        self._holder = holder
        self._challenge = _challenge_module(settings)
        self.current = None

    def start(self):
        """Serve the cached certificate or obtain one; AcmeError when neither works."""
        self.state.create()
        cached = self._usable_cached_certificate()
        if cached is not None:
            self._put_in_service(cached, "cached in %s" % self.state.path)
        else:
            self._put_in_service(self.obtain(), "issued by %s" % self.settings.directory)

    def obtain(self):
        """Ask the CA for a new certificate and cache it."""
        certificate = self._challenge.obtain(self.settings, self.state)
        self.state.save_certificate(certificate)
        return certificate

    def run_renewals(self, renews=True):
        """The renewal greenlet's body: check, renew inside the window, back off on failure.

        With several workers only one renews (`renews`); the others pick the
        renewed certificate up from the cache at their next check.
        """
        failures = 0
        while True:
            gevent.sleep(self._retry_delay(failures) if failures
                         else self.settings.renewal_check_interval)
            self._adopt_newer_cached_certificate()
            due = self.current.renewal_due(self.settings.renewal_window_ratio)
            if not renews or utc_now() < due:
                log.debug("certificate serial %x not due for renewal until %s",
                          self.current.serial, _when(due))
                continue
            log.info("certificate serial %x (expires %s) is due for renewal",
                     self.current.serial, _when(self.current.not_after))
            try:
                self._put_in_service(self.obtain(), "renewed by %s" % self.settings.directory)
                failures = 0
            except AcmeError as error:
                failures += 1
                log.error("renewal failed: %s; retrying in %gs; the current certificate "
                          "(serial %x) keeps serving until it expires %s",
                          error, self._retry_delay(failures), self.current.serial,
                          _when(self.current.not_after))

    def _retry_delay(self, failures):
        return min(self.settings.renewal_check_interval,
                   RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1])

    def _adopt_newer_cached_certificate(self):
        try:
            cached = self.state.load_certificate()
        except AcmeError:
            return
        if cached is not None and cached.serial != self.current.serial and \
                cached.not_after >= self.current.not_after and \
                cached.covers(self.settings.domains):
            try:
                self._put_in_service(cached, "renewed by another worker")
            except AcmeError as error:
                log.warning("%s", error)

    def _usable_cached_certificate(self):
        settings = self.settings
        if settings.force:
            log.info("--tls-force-acme: obtaining a new certificate")
            return None
        try:
            cached = self.state.load_certificate()
        except AcmeError as error:
            log.warning("cached certificate unusable (%s); obtaining a new one", error)
            return None
        if cached is None:
            log.info("no cached certificate in %s", self.state.path)
            return None
        if not cached.covers(settings.domains):
            log.info("cached certificate covers %s, not %s; obtaining a new one",
                     ", ".join(cached.domains), ", ".join(settings.domains))
            return None
        if cached.key_type != settings.key_type:
            log.info("cached certificate has a %s key, not %s; obtaining a new one",
                     cached.key_type, settings.key_type)
            return None
        due = cached.renewal_due(settings.renewal_window_ratio)
        if utc_now() >= due:
            log.info("cached certificate (serial %x) is inside its renewal window since %s; "
                     "obtaining a new one", cached.serial, _when(due))
            return None
        return cached

    def _put_in_service(self, certificate, source):
        try:
            self._holder.install(certificate.chain_pem, certificate.key_pem, source)
        except CertificateError as error:
            raise AcmeError("certificate %s refused: %s" % (source, error)) from None
        self.current = certificate
        log.info("certificate serial %x installed; next renewal due %s", certificate.serial,
                 _when(certificate.renewal_due(self.settings.renewal_window_ratio)))


def _challenge_module(settings):
    """The module that answers the CA's challenge, imported at start-up (a broken
    install fails then, not at the first renewal). HTTP-01 runs certbot as its own
    process: only DNS-01 loads simple-acme-dns, dnspython, josepy and requests here."""
    if settings.dns_provider:
        from greenbridge.acme import dns01
        return dns01
    from greenbridge.acme import http01
    return http01


def _when(moment):
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
