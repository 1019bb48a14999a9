"""The ACME options, checked and frozen; argument types for cli.py.

Every check raises ConfigError with a message that names the option, so
start-up fails with one clear line.
"""

import base64
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

# As a module: config.py imports this one to build its acme field.
from greenbridge import config

LETS_ENCRYPT_DIRECTORIES = {
    "production": "https://acme-v02.api.letsencrypt.org/directory",
    "staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
# Key types an ACME CA signs (Let's Encrypt issues no Ed25519 certificates).
ACME_KEY_TYPES = ("p256", "p384", "rsa2048", "rsa4096")
DNS_PROVIDERS = ("rfc2136", "exec")
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1",
                   "hmac-md5")
# Parameters each provider takes: (required, optional).
PROVIDER_PARAMETERS = {
    "rfc2136": (("server", "key_name", "key_secret"), ("port", "zone", "algorithm")),
    "exec": (("command",), ()),
}
SECRET_PROVIDER_PARAMETERS = ("key_secret",)


@dataclass(frozen=True)
class AcmeSettings:
    domains: Tuple[str, ...]
    key_type: str
    state_dir: str
    directory: str = LETS_ENCRYPT_DIRECTORIES["production"]
    email: Optional[str] = None
    force: bool = False
    renewal_window_ratio: float = 0.33
    renewal_check_interval: float = 86400.0
    ca_bundle: Optional[str] = None
    eab_key_id: Optional[str] = None
    eab_mac_key: Optional[str] = field(default=None, repr=False)
    http01_port: int = 80
    http01_address: str = ""
    dns_provider: Optional[str] = None
    dns_params: Mapping[str, str] = field(default_factory=dict, repr=False)
    resolvers: Tuple[Tuple[str, int], ...] = ()
    propagation_timeout: float = 120.0
    # Environment for certbot and exec hooks (the server's, minus WSS_CONFIG_*).
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def challenge(self):
        return "dns-01" if self.dns_provider else "http-01"


# Argument types (argparse prints "invalid <name> value: '...'").

def acme_directory(text):
    text = text.strip()
    if text in LETS_ENCRYPT_DIRECTORIES:
        return LETS_ENCRYPT_DIRECTORIES[text]
    if not text.startswith(("https://", "http://")):
        raise ValueError(text)
    return text


acme_directory.__name__ = "ACME directory (an https:// URL, 'production' or 'staging')"


def positive_seconds(text):
    number = float(text)
    if not 0 < number < float("inf"):
        raise ValueError(text)
    return config.not_over(config.MAX_SECONDS, text, number)


positive_seconds.__name__ = "positive number of seconds"


def renewal_ratio(text):
    ratio = float(text)
    if not 0 < ratio <= 1:
        raise ValueError(text)
    return ratio


renewal_ratio.__name__ = "ratio (above 0, at most 1)"


def dns_param(text):
    key, separator, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not separator or not key:
        raise ValueError(text)
    return key, value.strip()


dns_param.__name__ = "key=value"


def secret_dns_params(params):
    """The secret values among parsed --tls-dns-param pairs (the TSIG key)."""
    return [value for key, value in params if key in SECRET_PROVIDER_PARAMETERS]


def resolver_list(text):
    """'1.1.1.1, 127.0.0.1:8053, [::1]:53' -> ((host, port), ...)."""
    resolvers = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, port = item, 53
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest:
                port = _port_number(rest.lstrip(":"), text)
        elif item.count(":") == 1:
            host, port_text = item.split(":")
            port = _port_number(port_text, text)
        resolvers.append((host, port))
    if not resolvers:
        raise ValueError(text)
    return tuple(resolvers)


resolver_list.__name__ = "resolver list (host[:port], comma-separated)"


def _port_number(text, whole):
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(whole)
    return port


def build_acme_settings(options, domains, key_type, environment):
    """AcmeSettings from parsed options; ConfigError on a combination that cannot work."""
    if not domains:
        raise config.ConfigError("--tls-mode automate needs at least one --tls-domain")
    if key_type not in ACME_KEY_TYPES:
        raise config.ConfigError(
            "--tls-key-type %s cannot be used with --tls-mode automate: ACME CAs issue only "
            "%s certificates" % (key_type, ", ".join(ACME_KEY_TYPES)))
    provider = options.tls_dns_provider
    wildcards = [domain for domain in domains if domain.startswith("*.")]
    if wildcards and not provider:
        raise config.ConfigError(
            "--tls-domain %s: wildcard certificates need the DNS-01 challenge; set "
            "--tls-dns-provider (rfc2136 or exec)" % wildcards[0])
    if "localhost" in domains:
        raise config.ConfigError("--tls-domain localhost: no ACME CA issues certificates for it; "
                                 "give the server's public name(s)")
    if not provider and options.tls_http01_port == options.ws_port and \
            _overlap(options.ws_host, options.tls_http01_address):
        raise config.ConfigError(
            "--tls-http01-port %d is also --ws-port: certbot's HTTP-01 server needs that port "
            "for itself; choose another one that the CA's port 80 reaches, or use DNS-01"
            % options.ws_port)
    params = dict(options.tls_dns_param or ())
    if provider:
        _check_provider_parameters(provider, params)
    elif params:
        raise config.ConfigError("--tls-dns-param is set but --tls-dns-provider is not")
    if bool(options.tls_eab_key_id) != bool(options.tls_eab_mac_key):
        raise config.ConfigError(
            "--tls-eab-key-id and --tls-eab-mac-key go together; set both or neither")
    ca_bundle = options.tls_acme_ca_bundle
    if ca_bundle and not (os.path.isfile(ca_bundle) and os.access(ca_bundle, os.R_OK)):
        raise config.ConfigError("--tls-acme-ca-bundle: %r is not a readable file" % ca_bundle)
    return AcmeSettings(
        domains=tuple(domains),
        key_type=key_type,
        state_dir=os.path.abspath(options.tls_acme_state_dir),
        directory=options.tls_acme_directory,
        email=options.tls_email or None,
        force=bool(options.tls_force_acme),
        renewal_window_ratio=options.tls_renewal_window_ratio,
        renewal_check_interval=options.tls_renewal_check_interval,
        ca_bundle=os.path.abspath(ca_bundle) if ca_bundle else None,
        eab_key_id=options.tls_eab_key_id or None,
        eab_mac_key=options.tls_eab_mac_key or None,
        http01_port=options.tls_http01_port,
        http01_address=options.tls_http01_address,
        dns_provider=provider,
        dns_params=params,
        resolvers=config.flattened(options.tls_resolvers),
        propagation_timeout=options.tls_propagation_timeout,
        environment=dict(environment),
    )


def _overlap(address, other):
    wildcards = ("", "0.0.0.0", "::")
    return address in wildcards or other in wildcards or address == other


def _check_provider_parameters(provider, params):
    required, optional = PROVIDER_PARAMETERS[provider]
    missing = [key for key in required if not params.get(key)]
    if missing:
        raise config.ConfigError("--tls-dns-provider %s needs --tls-dns-param %s=..."
                                 % (provider, missing[0]))
    unknown = sorted(set(params) - set(required) - set(optional))
    if unknown:
        raise config.ConfigError("--tls-dns-param %s: unknown parameter for %s (known: %s)"
                                 % (unknown[0], provider, ", ".join(required + optional)))
    if provider == "rfc2136":
        _check_rfc2136_parameters(params)


def _check_rfc2136_parameters(params):
    try:
        _port_number(params.get("port", "53"), "")
    except ValueError:
        raise config.ConfigError("--tls-dns-param port=%s: not a port number"
                                 % params["port"]) from None
    algorithm = params.get("algorithm", TSIG_ALGORITHMS[0])
    if algorithm not in TSIG_ALGORITHMS:
        raise config.ConfigError("--tls-dns-param algorithm=%s: not one of %s"
                                 % (algorithm, ", ".join(TSIG_ALGORITHMS)))
    try:
        base64.b64decode(params["key_secret"], validate=True)
    except ValueError:
        raise config.ConfigError("--tls-dns-param key_secret: not base64 (as in BIND's key "
                                 "files)") from None
