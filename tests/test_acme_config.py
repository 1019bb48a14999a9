"""The ACME options: flags, environment names, defaults, documentation and bad values."""

import os

import pytest

from greenbridge.acme.settings import build_acme_settings
from greenbridge.cli import build_parser
from greenbridge.config import ConfigError, build_config
from support import ECHO_PHP, REPO, REQUIRED, readme_option_table, run_cli

# Let's Encrypt's directory URLs as it publishes them (letsencrypt.org/docs/acme-protocol-updates,
# letsencrypt.org/docs/staging-environment).
LETS_ENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"

# flag, environment variable, default as parsed.
ACME_OPTIONS = [
    ("--tls-email", "WSS_CONFIG_TLS_EMAIL", None),
    ("--tls-acme-state-dir", "WSS_CONFIG_TLS_ACME_DIR", "./acme-state"),
    ("--tls-force-acme", "WSS_CONFIG_TLS_FORCE_AUTOMATE", False),
    ("--tls-renewal-window-ratio", "WSS_CONFIG_TLS_RENEWAL_WINDOW_RATIO", 0.33),
    ("--tls-dns-provider", "WSS_CONFIG_TLS_DNS_PROVIDER", None),
    ("--tls-dns-param", "WSS_CONFIG_TLS_DNS_PARAMS", None),
    ("--tls-acme-directory", "WSS_CONFIG_TLS_ACME_DIRECTORY", LETS_ENCRYPT_PRODUCTION),
    ("--tls-acme-ca-bundle", "WSS_CONFIG_TLS_ACME_CA_BUNDLE", None),
    ("--tls-eab-key-id", "WSS_CONFIG_TLS_EAB_KEY_ID", None),
    ("--tls-eab-mac-key", "WSS_CONFIG_TLS_EAB_MAC_KEY", None),
    ("--tls-propagation-timeout", "WSS_CONFIG_TLS_PROPAGATION_TIMEOUT", 120.0),
    ("--tls-renewal-check-interval", "WSS_CONFIG_TLS_RENEWAL_CHECK_INTERVAL", 86400.0),
    ("--tls-http01-port", "WSS_CONFIG_TLS_HTTP01_PORT", 80),
    ("--tls-http01-address", "WSS_CONFIG_TLS_HTTP01_ADDRESS", ""),
    ("--tls-resolvers", "WSS_CONFIG_TLS_RESOLVERS", None),
]


def parse(*flags, environment=None):
    return build_parser().parse_args(args=[*REQUIRED, *flags], env_vars=environment or {})


@pytest.mark.parametrize("flag,env_name,default", ACME_OPTIONS)
def test_every_acme_option_has_its_flag_environment_variable_default_and_docs(flag, env_name,
                                                                            default):
    actions = {action.dest: action for action in build_parser()._actions}
    action = actions[flag[2:].replace("-", "_")]
    assert flag in action.option_strings
    assert action.env_var == env_name
    assert getattr(parse(), action.dest) == default
    assert readme_option_table()[flag] == env_name


def test_values_from_the_environment_and_repeated_flags():
    options = parse(environment={
        "WSS_CONFIG_TLS_ACME_DIRECTORY": "staging",
        "WSS_CONFIG_TLS_DNS_PARAMS": "[server=127.0.0.1, key-name=k, key_secret=c2VjcmV0]",
        "WSS_CONFIG_TLS_RESOLVERS": "[127.0.0.1:8053, \"[::1]:53\"]",
        "WSS_CONFIG_TLS_FORCE_AUTOMATE": "true",
    })
    assert options.tls_acme_directory == LETS_ENCRYPT_STAGING
    assert dict(options.tls_dns_param) == {"server": "127.0.0.1", "key_name": "k",
                                           "key_secret": "c2VjcmV0"}
    assert options.tls_force_acme is True
    settings = build_acme_settings(
        parse("--tls-dns-provider", "rfc2136", "--tls-dns-param", "server=127.0.0.1",
              "--tls-dns-param", "key_name=k", "--tls-dns-param", "key_secret=c2VjcmV0",
              "--tls-resolvers", "127.0.0.1:8053,[::1]:53", "--tls-resolvers", "10.0.0.1"),
        ["*.example.com", "example.com"], "p256", {})
    assert settings.resolvers == (("127.0.0.1", 8053), ("::1", 53), ("10.0.0.1", 53))
    assert settings.challenge == "dns-01"


@pytest.mark.parametrize("args,message", [
    (["--tls-renewal-window-ratio", "1.5"], "--tls-renewal-window-ratio: invalid ratio"),
    (["--tls-renewal-window-ratio", "0"], "--tls-renewal-window-ratio: invalid ratio"),
    (["--tls-renewal-check-interval", "0"], "--tls-renewal-check-interval: invalid positive"),
    (["--tls-acme-directory", "ftp://ca.example"], "--tls-acme-directory: invalid ACME directory"),
    (["--tls-dns-provider", "route53"], "--tls-dns-provider: invalid choice: 'route53'"),
    (["--tls-dns-param", "server"], "--tls-dns-param: invalid key=value value: 'server'"),
    (["--tls-resolvers", "1.1.1.1:99999"], "--tls-resolvers: invalid resolver list"),
    (["--tls-http01-port", "-1"], "--tls-http01-port: invalid port"),
])
def test_bad_acme_values_stop_start_up_with_one_line_and_status_2(args, message):
    result = run_cli(*REQUIRED, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


@pytest.mark.parametrize("args,domains,key_type,message", [
    ([], ["*.example.com"], "p256",
     "--tls-domain *.example.com: wildcard certificates need the DNS-01 challenge; "
     "set --tls-dns-provider"),
    ([], ["example.com"], "ed25519", "--tls-key-type ed25519 cannot be used with --tls-mode "
                                     "automate: ACME CAs issue only p256, p384, rsa2048, rsa4096"),
    ([], [], "p256", "--tls-mode automate needs at least one --tls-domain"),
    ([], ["localhost"], "p256", "--tls-domain localhost: no ACME CA issues certificates for it"),
    (["-P", "80"], ["example.com"], "p256", "--tls-http01-port 80 is also --ws-port"),
    (["--tls-dns-provider", "rfc2136", "--tls-dns-param", "server=ns1"], ["example.com"], "p256",
     "--tls-dns-provider rfc2136 needs --tls-dns-param key_name=..."),
    (["--tls-dns-provider", "exec"], ["example.com"], "p256",
     "--tls-dns-provider exec needs --tls-dns-param command=..."),
    (["--tls-dns-provider", "exec", "--tls-dns-param", "command=hook",
      "--tls-dns-param", "zone=x"], ["example.com"], "p256",
     "--tls-dns-param zone: unknown parameter for exec (known: command)"),
    (["--tls-dns-provider", "rfc2136", "--tls-dns-param", "server=ns1", "--tls-dns-param",
      "key_name=k", "--tls-dns-param", "key_secret=not base64!"], ["example.com"], "p256",
     "--tls-dns-param key_secret: not base64"),
    (["--tls-dns-provider", "rfc2136", "--tls-dns-param", "server=ns1", "--tls-dns-param",
      "key_name=k", "--tls-dns-param", "key_secret=c2VjcmV0", "--tls-dns-param",
      "algorithm=hmac-sha3"], ["example.com"], "p256",
     "--tls-dns-param algorithm=hmac-sha3: not one of hmac-sha256"),
    (["--tls-dns-param", "command=hook"], ["example.com"], "p256",
     "--tls-dns-param is set but --tls-dns-provider is not"),
    (["--tls-eab-key-id", "kid"], ["example.com"], "p256",
     "--tls-eab-key-id and --tls-eab-mac-key go together"),
    (["--tls-acme-ca-bundle", "/nonexistent/ca.pem"], ["example.com"], "p256",
     "--tls-acme-ca-bundle: '/nonexistent/ca.pem' is not a readable file"),
])
def test_combinations_that_cannot_work_are_refused(args, domains, key_type, message):
    with pytest.raises(ConfigError) as refused:
        build_acme_settings(parse(*args), domains, key_type, {})
    assert message in str(refused.value)


def test_the_shipped_acme_config_file_parses_into_acme_settings():
    # The file names its script relative to the checkout; the test runs anywhere.
    options = build_parser().parse_args(
        args=["-c", os.path.join(REPO, "conf", "acme.conf"), "-s", ECHO_PHP], env_vars={})
    config = build_config(options, {"HOME": "/root", "WSS_CONFIG_TLS_EMAIL": "x@example.com"})
    assert config.tls_mode == "automate"
    assert config.acme.domains == ("ws.example.com",)
    assert config.acme.key_type == "p256"
    assert config.acme.directory == LETS_ENCRYPT_STAGING
    assert config.acme.challenge == "http-01"
    # certbot and DNS hooks inherit the environment, never greenbridge's own settings.
    assert config.acme.environment == {"HOME": "/root"}


def test_automate_defaults_to_p256_and_refuses_ed25519_with_one_line():
    options = parse("--tls-mode", "automate", "--tls-domain", "ws.example.com")
    assert build_config(options, {}).acme.key_type == "p256"
    assert build_config(parse("--tls-mode", "internal"), {}).tls_key_type == "ed25519"
    result = run_cli(*REQUIRED, "--tls-mode", "automate", "--tls-domain", "ws.example.com",
                     "--tls-key-type", "ed25519")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "greenbridge: error: " + (
        "--tls-key-type ed25519 cannot be used with --tls-mode automate: ACME CAs issue only "
        "p256, p384, rsa2048, rsa4096 certificates")
    result = run_cli(*REQUIRED, "--tls-mode", "automate")
    assert result.returncode == 2
    assert "--tls-mode automate needs at least one --tls-domain" in result.stderr
