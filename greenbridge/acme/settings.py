"""The ACME settings object: what ``--tls-mode automate`` needs, checked and frozen.

Its fields are the declared ACME settings (greenbridge/settings/acme.py); the
checks across them are in settings/checks.py.
"""

from dataclasses import dataclass, field
from typing import Mapping, Tuple

from greenbridge.settings import checks
from greenbridge.settings.acme import ACME
from greenbridge.settings.declaration import dataclass_of, declared_values


@dataclass(frozen=True)
class AcmeSettings(dataclass_of("DeclaredAcmeSettings", ACME.settings)):
    """A field for each ACME setting, and:"""
    domains: Tuple[str, ...] = ()
    key_type: str = "p256"
    # Environment for certbot and exec hooks (the server's, minus WSS_CONFIG_*).
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def challenge(self):
        return "dns-01" if self.dns_provider else "http-01"


def build_acme_settings(options, domains, key_type, environment):
    """AcmeSettings from parsed options; ConfigError on a combination that cannot work."""
    values = declared_values(ACME.settings, options)
    values.update(checks.acme_values(options, domains, key_type))
    return AcmeSettings(domains=tuple(domains), key_type=key_type,
                        environment=dict(environment), **values)
