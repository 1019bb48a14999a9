"""DNS providers that publish and remove the DNS-01 TXT records.

Each has ``present(name, value)`` and ``cleanup(name, value)``; `name` is the
record's full name without the final dot (``_acme-challenge.example.com``).
Both raise AcmeError with one line. Values are added next to others of the
same name (a domain and its wildcard share one name), and removed one by one.
"""

import logging
import shlex
import socket

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsigkeyring
import dns.update
from gevent import subprocess

from greenbridge.acme.errors import AcmeError

log = logging.getLogger("greenbridge.acme")

RECORD_TTL = 60
DNS_TIMEOUT = 30.0
HOOK_TIMEOUT = 120.0


def create_provider(settings):
    if settings.dns_provider == "rfc2136":
        return Rfc2136Provider(settings.dns_params)
    return ExecProvider(settings.dns_params, settings.environment)


class Rfc2136Provider:
    """Dynamic DNS update (RFC 2136) signed with TSIG: BIND, Knot, PowerDNS..."""

    def __init__(self, params):
        self.server = params["server"]
        self.port = int(params.get("port", 53))
        self.zone = params.get("zone")
        self.key_name = params["key_name"]
        self.algorithm = params.get("algorithm", "hmac-sha256")
        self.keyring = dns.tsigkeyring.from_text({self.key_name: params["key_secret"]})

    def __str__(self):
        return "rfc2136 (%s:%d)" % (self.server, self.port)

    def present(self, name, value):
        self._update(name, value, add=True)

    def cleanup(self, name, value):
        self._update(name, value, add=False)

    def _update(self, name, value, add):
        try:
            address = socket.getaddrinfo(self.server, self.port, type=socket.SOCK_STREAM)[0][4][0]
            zone = dns.name.from_text(self.zone) if self.zone else self._find_zone(name, address)
            update = dns.update.UpdateMessage(zone, keyring=self.keyring, keyname=self.key_name,
                                              keyalgorithm=self.algorithm)
            record = dns.name.from_text(name).relativize(zone)
            quoted = '"%s"' % value
            if add:
                update.add(record, RECORD_TTL, dns.rdatatype.TXT, quoted)
            else:
                update.delete(record, dns.rdatatype.TXT, quoted)
            response = dns.query.tcp(update, address, port=self.port, timeout=DNS_TIMEOUT)
        except (OSError, dns.exception.DNSException, ValueError) as error:
            raise AcmeError("DNS update of TXT %s at %s:%d failed: %s"
                            % (name, self.server, self.port, error or type(error).__name__)) \
                from None
        if response.rcode() != dns.rcode.NOERROR:
            raise AcmeError("DNS server %s:%d refused the update of TXT %s: %s (check the zone, "
                            "the TSIG key and the server's allow-update)"
                            % (self.server, self.port, name, dns.rcode.to_text(response.rcode())))

    def _find_zone(self, name, address):
        """The closest enclosing zone the server is authoritative for (asked by SOA)."""
        candidate = dns.name.from_text(name)
        while candidate != dns.name.root:
            query = dns.message.make_query(candidate, dns.rdatatype.SOA)
            response = dns.query.tcp(query, address, port=self.port, timeout=DNS_TIMEOUT)
            if any(rrset.rdtype == dns.rdatatype.SOA and rrset.name == candidate
                   for rrset in response.answer):
                return candidate
            candidate = candidate.parent()
        raise AcmeError("DNS server %s:%d is authoritative for no zone above %s; set "
                        "--tls-dns-param zone=..." % (self.server, self.port, name))


class ExecProvider:
    """Runs `command present|cleanup NAME VALUE`, like certbot's manual hooks."""

    def __init__(self, params, environment):
        self.command = shlex.split(params["command"])
        self.environment = dict(environment)

    def __str__(self):
        return "exec (%s)" % self.command[0]

    def present(self, name, value):
        self._run("present", name, value)

    def cleanup(self, name, value):
        self._run("cleanup", name, value)

    def _run(self, action, name, value):
        try:
            process = subprocess.Popen(self.command + [action, name, value], env=self.environment,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT)
        except OSError as error:
            raise AcmeError("DNS hook %s cannot run: %s" % (self.command[0], error.strerror)) \
                from None
        try:
            output, _ = process.communicate(timeout=HOOK_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise AcmeError("DNS hook %s %s %s did not finish within %gs"
                            % (self.command[0], action, name, HOOK_TIMEOUT)) from None
        lines = output.decode("utf-8", "replace").strip().splitlines()
        for line in lines:
            log.debug("DNS hook %s: %s", action, line)
        if process.returncode != 0:
            raise AcmeError("DNS hook %s %s %s failed (exit status %d)%s"
                            % (self.command[0], action, name, process.returncode,
                               ": " + lines[-1] if lines else ""))
