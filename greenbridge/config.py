"""The validated, immutable settings object, built from the parsed options.

Its fields are the declared settings (greenbridge/settings/: one declaration
each, with the checks across options in settings/checks.py); this module adds
what the server derives from them.
"""

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple

from greenbridge.acme.settings import AcmeSettings, build_acme_settings
from greenbridge.settings import checks
from greenbridge.settings.channels import CHANNELS
from greenbridge.settings.declaration import dataclass_of, declared_values
from greenbridge.settings.general import GENERAL
from greenbridge.settings.tls import TLS
from greenbridge.settings.values import ConfigError  # noqa: F401 (what every check raises; callers import it here)

# Variables that configure the bridge itself; they may hold secrets, so PHP
# never inherits them.
CONFIG_ENV_PREFIX = "WSS_CONFIG_"

_DECLARED = GENERAL.settings + TLS.settings + CHANNELS.settings


@dataclass(frozen=True)
class Config(dataclass_of("DeclaredSettings", _DECLARED)):
    """A field for each general, TLS and channel setting (settings/general.py, tls.py,
    channels.py), and:"""
    # --tls-mode automate: everything the ACME side needs, checked.
    acme: Optional[AcmeSettings] = None
    # What connection tokens are verified with: the --token-secret, or the loaded
    # --token-public-key; None when tokens are off.
    token_key: Any = field(default=None, repr=False)
    # The values of every setting declared secret (settings/): PHP never sees
    # them, whatever the variable that holds them is called.
    secret_values: Tuple[str, ...] = field(default=(), repr=False)
    # The server's own environment, captured once at start-up.
    base_environment: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def max_message_size(self):
        """The largest message either way: the bridge holds a whole message while its reader
        is slow, so --max-write-buffer-size caps it as --max-payload-size does."""
        return min(self.max_payload_size, self.max_write_buffer_size)

    @property
    def notify_socket(self):
        """systemd's notification socket ("" when not run by systemd with Type=notify)."""
        return self.base_environment.get("NOTIFY_SOCKET", "")

    def is_trusted_proxy(self, address):
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(peer in network for network in self.trusted_proxies)


def build_config(options, environment, secret_values=()):
    """The settings from parsed options: the declared values, with what settings/checks.py
    decides from several options; ConfigError on the first problem.

    `secret_values`: the strings the settings declared secret hold.
    """
    values = declared_values(_DECLARED, options)
    values.update(checks.general_values(options))
    values.update(checks.channel_values(options))
    acme = None
    if values["tls_mode"] == "automate":
        # PHP inherits the server's environment; certbot and DNS hooks get it
        # too, minus greenbridge's own settings (a TSIG secret among them).
        acme = build_acme_settings(options, values["tls_domains"], values["tls_key_type"], {
            name: value for name, value in environment.items()
            if not name.startswith("WSS_CONFIG_")})
    return Config(
        **values,
        acme=acme,
        secret_values=tuple(value for value in secret_values if value),
        base_environment=dict(environment),
    )
