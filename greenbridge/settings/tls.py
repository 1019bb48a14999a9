"""The TLS options (wss://): the mode, the certificate, client certificates, OpenSSL's choices."""

from greenbridge.settings.declaration import Section, Setting
from greenbridge.settings.values import (TLS_CLIENT_AUTH_MODES, TLS_KEY_TYPES, TLS_MODES,
                                         TLS_VERSIONS, choice_of, comma_separated, flattened,
                                         name, separated_names)

TLS = Section("tls", (
    Setting("tls_mode", "--tls-mode", env="WSS_CONFIG_TLS_MODE", type=choice_of(TLS_MODES),
            default="none",
            help="none (ws://), internal (self-signed), manual (--tls-cert/--tls-key) or "
                 "automate (ACME)",
            readme="``none`` (ws://), ``internal``, ``manual``, ``automate`` (ACME)"),
    # Unset, it depends on --tls-mode: see checks.py.
    Setting("tls_domains", "--tls-domain", env="WSS_CONFIG_TLS_DOMAINS", action="append",
            type=comma_separated(name), value=flattened, readme_default="localhost",
            help="domain of the certificate, wildcards allowed (repeatable or comma-separated; "
                 "default localhost)",
            readme="name in the certificate; wildcards allowed, IP addresses too (not in "
                   "automate mode); comma list allowed"),
    Setting("tls_key_type", "--tls-key-type", env="WSS_CONFIG_TLS_KEY_TYPE",
            type=choice_of(TLS_KEY_TYPES), readme_default="ed25519",
            help="key type: " + ", ".join(TLS_KEY_TYPES) + " (default ed25519; p256 with "
                 "--tls-mode automate)",
            readme=", ".join("``%s``" % key_type for key_type in TLS_KEY_TYPES)
            + " (automate: default ``p256``)"),
    Setting("tls_cert", "--tls-cert", env="WSS_CONFIG_TLS_CERT",
            help="PEM certificate, a full chain allowed (manual mode)",
            readme="PEM certificate, full chain allowed (manual)"),
    Setting("tls_key", "--tls-key", env="WSS_CONFIG_TLS_KEY",
            help="PEM private key (manual mode)",
            readme="PEM private key, unencrypted (manual)"),
    Setting("tls_client_auth", "--tls-client-auth", env="WSS_CONFIG_TLS_CLIENT_AUTH_MODE",
            type=choice_of(TLS_CLIENT_AUTH_MODES), default="none",
            help="client certificates: none, request, require, verify-if-given or "
                 "require-and-verify",
            readme="``request``, ``require``, ``verify-if-given``, ``require-and-verify``"),
    Setting("tls_client_auth_ca", "--tls-client-auth-ca", env="WSS_CONFIG_TLS_CLIENT_AUTH_CA",
            help="PEM CA bundle client certificates are verified against",
            readme="PEM CA bundle client certificates verify against (needed by the verify "
                   "modes)"),
    Setting("tls_ciphers", "--tls-ciphers", env="WSS_CONFIG_TLS_CIPHERS", action="append",
            value=separated_names, readme_default="OpenSSL's",
            help="allowed cipher suite, OpenSSL name, TLS 1.2 or 1.3 (repeatable, or a list "
                 "separated by commas or colons; default: OpenSSL's)",
            readme="allowed cipher suites, OpenSSL names (``TLS_*``: TLS 1.3; others: TLS 1.2)"),
    Setting("tls_curves", "--tls-curves", env="WSS_CONFIG_TLS_CURVES", action="append",
            value=separated_names, readme_default="OpenSSL's",
            help="allowed key-exchange group, in order of preference (repeatable, or a list "
                 "separated by commas or colons; default: OpenSSL's)",
            readme="allowed key-exchange groups, preferred first"),
    Setting("tls_alpn", "--tls-alpn", env="WSS_CONFIG_TLS_ALPN", action="append",
            type=comma_separated(name, empty_means_none=True), value=flattened,
            help="ALPN protocol offered, e.g. http/1.1 (repeatable or comma-separated; "
                 "default: no ALPN)",
            readme="ALPN protocol offered, e.g. ``http/1.1``; comma list allowed"),
    Setting("tls_secrets_log", "--tls-secrets-log", env="WSS_CONFIG_TLS_INSECURE_SECRETS_LOG",
            help="append TLS secrets to this file in NSS key log format (for Wireshark; "
                 "insecure: debugging only)",
            readme="append NSS key log lines here (Wireshark); insecure, warned about at "
                   "start-up; created 0600, refused if others can read it"),
    Setting("tls_min_version", "--tls-min-version", env="WSS_CONFIG_TLS_MIN_VERSION",
            type=choice_of(TLS_VERSIONS), default="1.2", help="1.2 or 1.3",
            readme="``1.2`` or ``1.3``"),
))
