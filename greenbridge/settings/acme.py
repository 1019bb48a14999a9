"""The ACME options (``--tls-mode automate``), their value types and vocabularies.

Their settings object is acme/settings.py's AcmeSettings, whose fields are the
attributes declared here.
"""

from greenbridge.settings.declaration import Section, Setting
from greenbridge.settings.values import flattened, port, positive_seconds, text_or_none

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


def acme_directory(text):
    text = text.strip()
    if text in LETS_ENCRYPT_DIRECTORIES:
        return LETS_ENCRYPT_DIRECTORIES[text]
    if not text.startswith(("https://", "http://")):
        raise ValueError(text)
    return text


acme_directory.__name__ = "ACME directory (an https:// URL, 'production' or 'staging')"


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


def dns_params(pairs):
    """The parsed --tls-dns-param pairs as one mapping."""
    return dict(pairs or ())


def secret_dns_params(pairs):
    """The secret values among parsed --tls-dns-param pairs (the TSIG key)."""
    return [value for key, value in pairs if key in SECRET_PROVIDER_PARAMETERS]


def resolver_list(text):
    """'1.1.1.1, 127.0.0.1:8053, [::1]:53' -> ((host, port), ...)."""
    resolvers = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, resolver_port = item, 53
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest:
                resolver_port = port_number(rest.lstrip(":"), text)
        elif item.count(":") == 1:
            host, port_text = item.split(":")
            resolver_port = port_number(port_text, text)
        resolvers.append((host, resolver_port))
    if not resolvers:
        raise ValueError(text)
    return tuple(resolvers)


resolver_list.__name__ = "resolver list (host[:port], comma-separated)"


def port_number(text, whole):
    """A port from 1 to 65535; ValueError naming `whole` otherwise."""
    number = int(text)
    if not 0 < number < 65536:
        raise ValueError(whole)
    return number


ACME = Section("acme", (
    Setting("directory", "--tls-acme-directory", env="WSS_CONFIG_TLS_ACME_DIRECTORY",
            type=acme_directory, default=LETS_ENCRYPT_DIRECTORIES["production"],
            readme_default="production",
            help="ACME directory URL; 'production' and 'staging' name Let's Encrypt's",
            readme="ACME directory URL; ``production`` and ``staging`` name Let's Encrypt's"),
    Setting("email", "--tls-email", env="WSS_CONFIG_TLS_EMAIL", value=text_or_none,
            help="contact address for the ACME account (expiry notices)",
            readme="account contact (expiry notices)"),
    # Made absolute by checks.py.
    Setting("state_dir", "--tls-acme-state-dir", env="WSS_CONFIG_TLS_ACME_DIR",
            default="./acme-state",
            help="directory for the account, the cached certificate and certbot's files (0700)",
            readme="account, cached certificate, certbot files"),
    Setting("force", "--tls-force-acme", env="WSS_CONFIG_TLS_FORCE_AUTOMATE",
            action="store_true", default=False,
            help="obtain a new certificate at start-up even when the cached one is good",
            readme="obtain a new certificate at every start"),
    Setting("renewal_window_ratio", "--tls-renewal-window-ratio",
            env="WSS_CONFIG_TLS_RENEWAL_WINDOW_RATIO", type=renewal_ratio, default=0.33,
            help="renew when less than this fraction of the certificate's lifetime remains",
            readme="renew when less than this fraction of the lifetime remains"),
    Setting("renewal_check_interval", "--tls-renewal-check-interval",
            env="WSS_CONFIG_TLS_RENEWAL_CHECK_INTERVAL", type=positive_seconds,
            default=86400.0, help="seconds between renewal checks"),
    Setting("ca_bundle", "--tls-acme-ca-bundle", env="WSS_CONFIG_TLS_ACME_CA_BUNDLE",
            readme_default="system's",
            help="PEM CA bundle to trust for the ACME server's own HTTPS (default: the "
                 "system's)",
            readme="CA bundle for the ACME server's HTTPS"),
    Setting("eab_key_id", "--tls-eab-key-id", env="WSS_CONFIG_TLS_EAB_KEY_ID",
            value=text_or_none,
            help="external account binding key ID, for CAs that need one",
            readme="external account binding key ID"),
    Setting("eab_mac_key", "--tls-eab-mac-key", env="WSS_CONFIG_TLS_EAB_MAC_KEY",
            value=text_or_none, secret=True,
            help="external account binding MAC key (base64url)",
            readme="external account binding MAC key"),
    Setting("http01_port", "--tls-http01-port", env="WSS_CONFIG_TLS_HTTP01_PORT", type=port,
            default=80,
            help="port certbot answers HTTP-01 challenges on (the CA connects to port 80)",
            readme="where certbot answers HTTP-01"),
    Setting("http01_address", "--tls-http01-address", env="WSS_CONFIG_TLS_HTTP01_ADDRESS",
            default="", readme_default="all",
            help="address certbot listens on for HTTP-01 (default: all)",
            readme="address certbot listens on"),
    Setting("dns_provider", "--tls-dns-provider", env="WSS_CONFIG_TLS_DNS_PROVIDER",
            choices=DNS_PROVIDERS, readme_default="none (HTTP-01)",
            help="use DNS-01 and publish the TXT records with rfc2136 or exec (needed for "
                 "wildcards)",
            readme="``rfc2136`` or ``exec``: use DNS-01"),
    Setting("dns_params", "--tls-dns-param", env="WSS_CONFIG_TLS_DNS_PARAMS", action="append",
            type=dns_param, value=dns_params, secret=secret_dns_params,
            help="provider parameter key=value (repeatable; as a list [a=1, b=2] in the "
                 "environment or config file)",
            readme="provider parameter ``key=value``; a list ``[a=1, b=2]`` in environment "
                   "and file"),
    Setting("resolvers", "--tls-resolvers", env="WSS_CONFIG_TLS_RESOLVERS", action="append",
            type=resolver_list, value=flattened, readme_default="system's",
            help="DNS servers (host[:port], comma-separated) checked for the TXT records "
                 "before validation (default: the system's)",
            readme="``host[:port]`` list checked for the TXT records"),
    Setting("propagation_timeout", "--tls-propagation-timeout",
            env="WSS_CONFIG_TLS_PROPAGATION_TIMEOUT", type=positive_seconds, default=120.0,
            help="seconds to wait for the TXT records to appear at the resolvers",
            readme="seconds to wait for the TXT records"),
), title="automatic certificates (--tls-mode automate)",
    description="Obtain a certificate for every --tls-domain from an ACME CA, cache it in the "
                "state directory and renew it in the background. HTTP-01 (default) runs "
                "certbot's standalone server on --tls-http01-port; DNS-01 (set "
                "--tls-dns-provider) publishes TXT records.")
