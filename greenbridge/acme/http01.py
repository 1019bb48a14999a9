"""HTTP-01 with certbot: ``certbot certonly --standalone`` as a gevent subprocess.

certbot's own web server answers the challenge on --tls-http01-port while it
runs (the bridge never listens there); its config, work and logs folders live
in the state directory, so nothing goes to /etc/letsencrypt and no root-only
path is needed. certbot keeps its ACME account there and reuses it.

Every local user can read a process's command line (ps, /proc/*/cmdline), so
the external account binding reaches certbot in a config file of mode 0600
that lives only while certbot runs.
"""

import logging
import os
import re
import socket
import sys

import gevent
from gevent import subprocess

from greenbridge.acme.errors import AcmeError
from greenbridge.acme.state import Certificate, write_private
from greenbridge.listening import ListenOptions, why_cannot_listen

log = logging.getLogger("greenbridge.acme")

CERT_NAME = "greenbridge"
HTTP01_LISTENER = ListenOptions("--tls-http01-address", "--tls-http01-port")
# certbot has its own network timeouts; this only stops a hung run.
CERTBOT_TIMEOUT = 600.0
_CERTBOT_MAIN = "import sys; from certbot.main import main; sys.exit(main())"
_KEY_TYPE_ARGUMENTS = {
    "p256": ["--key-type", "ecdsa", "--elliptic-curve", "secp256r1"],
    "p384": ["--key-type", "ecdsa", "--elliptic-curve", "secp384r1"],
    "rsa2048": ["--key-type", "rsa", "--rsa-key-size", "2048"],
    "rsa4096": ["--key-type", "rsa", "--rsa-key-size", "4096"],
}
# certbot's output lines that are advice or noise, not the error.
_NOISE = re.compile(r"^(Saving debug log|Ask for help|Plugins selected|See the logfile|"
                    r"Non-standard path|Account registered|Requesting a certificate|"
                    r"Performing the following|http-01 challenge for|Waiting for verification|"
                    r"Cleaning up challenges|Challenge failed for|Some challenges have failed|"
                    r"Hint:|-+ ?-|\s*$)")


def certbot_command(settings, state, eab_config=None):
    """certbot's arguments; `eab_config` is the file write_eab_config made, if any."""
    command = [
        sys.executable, "-c", _CERTBOT_MAIN, "certonly", "-v",
        "--non-interactive", "--agree-tos", "--no-eff-email",
        "--standalone", "--preferred-challenges", "http",
        "--http-01-port", str(settings.http01_port),
        "--http-01-address", settings.http01_address,
        "--server", settings.directory,
        "--config-dir", state.folder("certbot", "config"),
        "--work-dir", state.folder("certbot", "work"),
        "--logs-dir", state.folder("certbot", "logs"),
        "--max-log-backups", "20",
        # We decide when to renew; certbot must not refuse because it is early.
        "--cert-name", CERT_NAME, "--force-renewal",
        *_KEY_TYPE_ARGUMENTS[settings.key_type],
        "--domains", ",".join(settings.domains),
    ]
    if settings.email:
        command += ["--email", settings.email]
    else:
        command += ["--register-unsafely-without-email"]
    if eab_config:
        command += ["--config", eab_config]
    return command


def write_eab_config(settings, state):
    """The binding as a certbot config file (keys are its long option names), 0600."""
    path = os.path.join(state.folder("certbot"), "eab.ini")
    write_private(path, ("eab-kid = %s\neab-hmac-key = %s\n"
                         % (settings.eab_key_id, settings.eab_mac_key)).encode())
    return path


def obtain(settings, state):
    """Run certbot for settings.domains; return the new Certificate or raise AcmeError."""
    _check_port_free(settings)
    environment = dict(settings.environment)
    if settings.ca_bundle:
        # certbot talks to the CA with requests, which takes its trust from here.
        environment["REQUESTS_CA_BUNDLE"] = settings.ca_bundle
    log.info("requesting a certificate for %s from %s (HTTP-01, certbot on port %d)",
             ", ".join(settings.domains), settings.directory, settings.http01_port)
    eab_config = write_eab_config(settings, state) if settings.eab_key_id else None
    try:
        status, output = _run_certbot(certbot_command(settings, state, eab_config), environment,
                                      settings)
    finally:
        if eab_config:
            os.unlink(eab_config)
    if status != 0:
        raise AcmeError(describe_failure(output, settings))
    log.info("validated and issued by %s", settings.directory)
    live = os.path.join(state.folder("certbot", "config"), "live", CERT_NAME)
    with open(os.path.join(live, "fullchain.pem"), "rb") as chain, \
            open(os.path.join(live, "privkey.pem"), "rb") as key:
        return Certificate.parse(chain.read(), key.read())


def _run_certbot(command, environment, settings):
    """Run certbot to its end; (exit status, its output lines)."""
    process = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = []
    try:
        with gevent.Timeout(CERTBOT_TIMEOUT, AcmeError("certbot did not finish within %gs"
                                                       % CERTBOT_TIMEOUT)):
            for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                output.append(line)
                log.debug("certbot: %s", line)
                if line.startswith("Waiting for verification"):
                    log.info("challenge published: certbot answers HTTP-01 on port %d; "
                             "waiting for the CA to validate", settings.http01_port)
            status = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    return status, output


def _check_port_free(settings):
    """Fail early, with the option's name, when certbot could not listen on the port."""
    address = settings.http01_address or "0.0.0.0"
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((address, settings.http01_port))
    except OSError as error:
        raise AcmeError(why_cannot_listen(
            error, HTTP01_LISTENER, address, settings.http01_port,
            advice="certbot answers the CA's HTTP-01 challenge there: free it, pick another "
                   "port that the CA's port 80 reaches, or use DNS-01 (--tls-dns-provider)"
        )) from None
    finally:
        probe.close()


def describe_failure(output, settings):
    """certbot's output -> one line saying what went wrong and what to check."""
    text = "\n".join(output)
    problems = re.findall(r"Domain: (\S+)\s+Type:\s+(\S+)\s+Detail:\s+(.+)", text)
    if problems:
        domain, kind, detail = problems[0]
        message = "the CA could not validate %s (%s): %s" % (domain, kind, detail.strip())
        if kind in ("connection", "dns", "unauthorized", "incorrectResponse"):
            message += " -- does %s resolve to this server, and does its port 80 reach " \
                       "port %d here?" % (domain, settings.http01_port)
        return message
    if "Could not bind TCP port" in text:
        return "certbot could not listen on port %d (--tls-http01-port): it is in use" \
            % settings.http01_port
    meaningful = [line.strip() for line in output if not _NOISE.match(line)]
    refused = "An unexpected error occurred:" in meaningful
    if refused:
        meaningful = meaningful[meaningful.index("An unexpected error occurred:") + 1:]
    detail = " ".join(meaningful[:3]) or "certbot failed without a message"
    if "rateLimited" in text or "too many" in text.lower():
        return "rate limit hit at the CA: %s" % detail
    if re.search(r"ConnectionError|SSLError|Max retries|certificate verify failed", text):
        return "cannot reach the ACME server %s: %s" % (settings.directory, detail)
    return "the CA refused: %s" % detail if refused else detail
