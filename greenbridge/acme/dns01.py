"""DNS-01 in-process with simple-acme-dns: order, publish TXT, check propagation, finalize.

The account (key and registration) is ours: made once, with external account
binding when asked, saved 0600 in the state directory and reused.
simple-acme-dns does the order, the challenge values, the propagation check
(against --tls-resolvers, or the system's) and the finalization. Records are
removed again whatever happened.
"""

import json
import logging
import socket

import dns.exception
import dns.nameserver
import gevent
import josepy
import requests
import simple_acme_dns
from acme import client as acme_client
from acme import errors as acme_errors
from acme import challenges as acme_challenges
from acme import messages
from cryptography.hazmat.primitives.asymmetric import rsa
from simple_acme_dns import errors as simple_acme_errors

from greenbridge import __version__
from greenbridge.acme.errors import AcmeError
from greenbridge.acme.providers import create_provider
from greenbridge.acme.state import Certificate, write_private

log = logging.getLogger("greenbridge.acme")

USER_AGENT = "greenbridge/%s" % __version__
FINALIZE_TIMEOUT = 90
PROPAGATION_CHECK_INTERVAL = 2
# simple-acme-dns's names for our key types.
_KEY_TYPES = {"p256": "ec256", "p384": "ec384", "rsa2048": "rsa2048", "rsa4096": "rsa4096"}
# ACME error types that mean the CA could not see the records or reach the names.
_VALIDATION_HINT_TYPES = ("dns", "unauthorized", "incorrectResponse", "connection")


def obtain(settings, state):
    """Run one DNS-01 order for settings.domains; return the Certificate or raise AcmeError."""
    provider = create_provider(settings)
    try:
        client = _client(settings, state)
        _off_the_hub(client.generate_private_key_and_csr, key_type=_KEY_TYPES[settings.key_type])
        log.info("requesting a certificate for %s from %s (DNS-01 via %s)",
                 ", ".join(settings.domains), settings.directory, provider)
        records = client.request_verification_tokens()
        if not records:
            log.info("the CA still holds a valid validation of every name: nothing to publish")
        published = []
        try:
            for name, values in records.items():
                for value in values:
                    provider.present(name, value)
                    published.append((name, value))
            if records:
                log.info("challenge published: TXT %s; waiting up to %gs until %s see it",
                         ", ".join(records), settings.propagation_timeout,
                         _describe_resolvers(settings.resolvers))
                _wait_for_propagation(client, settings)
                log.info("TXT records visible; asking the CA to validate")
            chain_pem = client.request_certificate(timeout=FINALIZE_TIMEOUT)
        finally:
            _clean_up(provider, published)
    except (messages.Error, acme_errors.Error) as error:
        raise AcmeError(describe_acme_error(error)) from None
    except requests.RequestException as error:
        raise AcmeError("cannot reach the ACME server %s: %s" % (settings.directory, error)) \
            from None
    except (simple_acme_errors.InvalidDomain, simple_acme_errors.ChallengeUnavailable) as error:
        raise AcmeError(error.message) from None
    log.info("validated and issued by %s", settings.directory)
    return Certificate.parse(chain_pem, client.private_key)


class _ReusingACMEClient(simple_acme_dns.ACMEClient):
    """simple-acme-dns, minus the names the CA has validated recently.

    CAs reuse a recent validation of the same account (Let's Encrypt for
    hours to days, pebble when told to): such an authorization arrives
    already valid, and answering its challenge again is refused ("Cannot
    update challenge with status valid"). simple-acme-dns answers every one.
    """

    @property
    def challenges(self):
        pending = {}
        for authorization in self.order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue
            name = authorization.body.identifier.value
            found = [challenge for challenge in authorization.body.challenges
                     if isinstance(challenge.chall, acme_challenges.DNS01)]
            if not found:
                raise simple_acme_errors.ChallengeUnavailable(
                    "ACME server at %r offers no DNS-01 challenge for %s"
                    % (self.directory, name))
            pending.setdefault(name, []).extend(found)
        return pending

    @property
    def verification_tokens(self):
        # Empty when every name was validated recently; the stock getter raises then.
        return self._verification_tokens


def _client(settings, state):
    """A simple-acme-dns client on our account (registered now if there is none yet)."""
    try:
        with open(state.account_path) as file:
            saved = json.load(file)
        account_key = josepy.JWKRSA.json_loads(saved["key"])
        # The account URL is all later requests need (it becomes the JWS "kid").
        registration = messages.RegistrationResource(uri=saved["url"],
                                                     body=messages.Registration())
    except FileNotFoundError:
        account_key, registration = None, None
    except (ValueError, KeyError, josepy.errors.Error) as error:
        raise AcmeError("the ACME account file %s is unreadable (%s); move it away to register "
                        "a new account" % (state.account_path, error)) from None
    if account_key is None:
        account_key = josepy.JWKRSA(key=_off_the_hub(rsa.generate_private_key,
                                                     public_exponent=65537, key_size=2048))
    network = acme_client.ClientNetwork(account_key, user_agent=USER_AGENT,
                                        verify_ssl=settings.ca_bundle or True)
    directory = messages.Directory.from_json(network.get(settings.directory).json())
    acme = acme_client.ClientV2(directory, net=network)
    if registration is None:
        registration = _register(acme, account_key, directory, settings)
        write_private(state.account_path, json.dumps(
            {"key": account_key.json_dumps(), "url": registration.uri}).encode())
    network.account = registration

    client = _ReusingACMEClient(
        domains=list(settings.domains), email=settings.email, directory=settings.directory,
        nameservers=[dns.nameserver.Do53Nameserver(_ip_address(host), port)
                     for host, port in settings.resolvers] or None,
        user_agent=USER_AGENT)
    client.account_key = account_key
    client.net = network
    client.acme_client = acme
    client.account = registration
    return client


def _off_the_hub(function, **arguments):
    """Run CPU-heavy key generation (RSA 4096 takes a second) in gevent's thread pool."""
    return gevent.get_hub().threadpool.apply(function, kwds=arguments)


def _ip_address(host):
    try:
        return socket.getaddrinfo(host, 53, type=socket.SOCK_DGRAM)[0][4][0]
    except OSError as error:
        raise AcmeError("resolver %s (--tls-resolvers): %s" % (host, error.strerror)) from None


def _register(acme, account_key, directory, settings):
    binding = None
    if settings.eab_key_id:
        binding = messages.ExternalAccountBinding.from_data(
            account_public_key=account_key.public_key(), kid=settings.eab_key_id,
            hmac_key=settings.eab_mac_key, directory=directory)
    registration = acme.new_account(messages.NewRegistration.from_data(
        email=settings.email, terms_of_service_agreed=True,
        external_account_binding=binding))
    log.info("registered ACME account %s", registration.uri)
    return registration


def _wait_for_propagation(client, settings):
    try:
        visible = client.check_dns_propagation(timeout=settings.propagation_timeout,
                                               interval=PROPAGATION_CHECK_INTERVAL)
    except dns.exception.DNSException as error:
        raise AcmeError("checking the TXT records at %s failed: %s"
                        % (_describe_resolvers(settings.resolvers), error)) from None
    if not visible:
        raise AcmeError("the TXT records did not appear at %s within %gs "
                        "(--tls-propagation-timeout); check the DNS provider's settings"
                        % (_describe_resolvers(settings.resolvers),
                           settings.propagation_timeout))


def _clean_up(provider, published):
    for name, value in published:
        try:
            provider.cleanup(name, value)
        except AcmeError as error:
            log.warning("could not remove a challenge record: %s", error)
    if published:
        log.info("challenge records removed")


def _describe_resolvers(resolvers):
    if not resolvers:
        return "the system's resolvers"
    return "resolvers " + ", ".join("%s:%d" % resolver for resolver in resolvers)


def describe_acme_error(error):
    """An acme library error -> one line with the CA's words and what they mean."""
    if isinstance(error, acme_errors.ValidationError):
        for authorization in error.failed_authzrs:
            for challenge in authorization.body.challenges:
                if challenge.error is not None:
                    domain = authorization.body.identifier.value
                    problem = challenge.error
                    message = "the CA could not validate %s (%s): %s" % (
                        domain, problem.code or problem.typ, problem.detail)
                    if problem.code in _VALIDATION_HINT_TYPES:
                        message += " -- is the TXT record _acme-challenge.%s visible to " \
                                   "the CA's resolvers?" % domain.lstrip("*.")
                    return message
        return "the CA could not validate the domains: %s" % error
    if isinstance(error, messages.Error):
        if error.code == "rateLimited":
            return "rate limit hit at the CA: %s" % error.detail
        return "the CA refused (%s): %s" % (error.code or error.typ, error.detail)
    if isinstance(error, acme_errors.TimeoutError):
        return "the CA did not issue the certificate within %ds" % FINALIZE_TIMEOUT
    return "ACME error: %s" % (error or type(error).__name__)
