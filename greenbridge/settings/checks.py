"""What argparse cannot check value by value, in one place: every check that
looks at more than one option or at a file, and every default that depends
on another option.

Each function takes the parsed options (argparse's namespace) and returns the
settings it decides, by attribute; the first problem raises ConfigError with
one line that names the options.
"""

import base64
import os
import shutil

from greenbridge.settings.acme import (ACME_KEY_TYPES, PROVIDER_PARAMETERS, TSIG_ALGORITHMS,
                                       dns_params, port_number)
from greenbridge.settings.channels import EC_CURVES, HMAC_ALGORITHMS, RSA_ALGORITHMS
from greenbridge.settings.values import (DEFAULT_MAX_WRITE_BUFFER_SIZE, ConfigError, flattened)


def general_values(options):
    """php_executable, script, max_write_buffer_size, tls_domains and tls_key_type."""
    php_executable = _resolve_executable(options.php_executable)
    if not options.script and not options.route:
        raise ConfigError("--script is required (or at least one --route)")
    script = _existing_file("--script", options.script) if options.script else None
    for each in options.route or ():
        _existing_file("--route %s" % each.path, each.script)
    if options.ping_interval and not options.ping_timeout:
        raise ConfigError("--ping-timeout must be over 0 when --ping-interval is set")
    max_write_buffer_size = options.max_write_buffer_size
    if max_write_buffer_size is None:  # unset: it refuses nothing --max-payload-size allows
        max_write_buffer_size = max(DEFAULT_MAX_WRITE_BUFFER_SIZE, options.max_payload_size)
    if options.buffer_size > max_write_buffer_size:
        raise ConfigError(
            "--buffer-size (%d) must not exceed --max-write-buffer-size (%d)"
            % (options.buffer_size, max_write_buffer_size))
    if options.tcp_port and options.tcp_port + options.workers - 1 > 65535:
        raise ConfigError("--tcp-port %d: workers 1 to %d listen on %d to %d, past 65535"
                          % (options.tcp_port, options.workers, options.tcp_port,
                             options.tcp_port + options.workers - 1))
    _check_tls(options)
    domains = flattened(options.tls_domain)
    if options.tls_mode != "automate":
        domains = domains or ("localhost",)  # what a self-signed certificate is for
    # CAs issue no Ed25519 certificates: automate defaults to P-256.
    key_type = options.tls_key_type or ("p256" if options.tls_mode == "automate" else "ed25519")
    return dict(php_executable=php_executable, script=script,
                max_write_buffer_size=max_write_buffer_size, tls_domains=domains,
                tls_key_type=key_type)


def _check_tls(options):
    if options.tls_mode == "manual":
        for flag, path in (("--tls-cert", options.tls_cert), ("--tls-key", options.tls_key)):
            if not path:
                raise ConfigError("--tls-mode manual needs %s" % flag)
    elif options.tls_cert or options.tls_key:
        raise ConfigError("--tls-cert and --tls-key need --tls-mode manual")
    if options.tls_client_auth in ("verify-if-given", "require-and-verify") \
            and not options.tls_client_auth_ca:
        raise ConfigError("--tls-client-auth %s needs --tls-client-auth-ca"
                          % options.tls_client_auth)
    if options.tls_client_auth_ca:
        _existing_file("--tls-client-auth-ca", options.tls_client_auth_ca)


# NIST SP 800-131A: shorter RSA keys are not safe any more.
MIN_RSA_KEY_BITS = 2048


def channel_values(options):
    """token_key: what connection tokens are verified with (None: tokens are off)."""
    _check_history(options)
    routes = {route.path for route in options.route or ()}
    for path in (route.path for route in options.subscribe_route or ()):
        if path in routes:
            raise ConfigError("--subscribe-route %s: the path is also a --route; a path is "
                              "either PHP's or receive-only" % path)
    algorithm = options.token_algorithm
    secret, key_file = options.token_secret, options.token_public_key
    if secret and key_file:
        raise ConfigError("--token-secret and --token-public-key: give one, the one "
                          "--token-algorithm %s needs" % algorithm)
    if not secret and not key_file:
        for needs_tokens in ("--subscribe-route", "--require-token"):
            if getattr(options, needs_tokens[2:].replace("-", "_")):
                raise ConfigError("%s needs connection tokens: set --token-secret or "
                                  "--token-public-key" % needs_tokens)
        return dict(token_key=None)
    if algorithm in HMAC_ALGORITHMS:
        if key_file:
            raise ConfigError("--token-algorithm %s signs with a shared secret: set "
                              "--token-secret, not --token-public-key" % algorithm)
        # RFC 7518 3.2: an HMAC key at least as long as the hash; shorter ones can be guessed.
        needed = int(algorithm[2:]) // 8
        if len(secret.encode("utf-8")) < needed:
            raise ConfigError("--token-secret is %d bytes; %s needs at least %d (RFC 7518 3.2)"
                              % (len(secret.encode("utf-8")), algorithm, needed))
        return dict(token_key=secret)
    if secret:
        raise ConfigError("--token-algorithm %s verifies with a public key: set "
                          "--token-public-key, not --token-secret" % algorithm)
    return dict(token_key=_public_key(algorithm, key_file))


def _check_history(options):
    if options.history_size and options.workers > 1 and not options.broker:
        raise ConfigError("--history-size with --workers %d needs --broker: in-memory history "
                          "lives in one process" % options.workers)


def _public_key(algorithm, path):
    """The public key in PEM file `path`, checked to be of `algorithm`'s family."""
    path = _existing_file("--token-public-key", path)
    # Loaded only when a key is configured: parsing the options needs no cryptography.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    try:
        with open(path, "rb") as pem:
            key = load_pem_public_key(pem.read())
    except (ValueError, TypeError, OSError, UnsupportedAlgorithm):
        raise ConfigError("--token-public-key: %r is not a PEM public key (-----BEGIN PUBLIC "
                          "KEY-----)" % path) from None
    if algorithm in RSA_ALGORITHMS:
        if not isinstance(key, rsa.RSAPublicKey):
            raise ConfigError("--token-public-key: %r is not an RSA key, which --token-algorithm "
                              "%s needs" % (path, algorithm))
        if key.key_size < MIN_RSA_KEY_BITS:
            raise ConfigError("--token-public-key: %r is a %d-bit RSA key; at least %d bits"
                              % (path, key.key_size, MIN_RSA_KEY_BITS))
    elif not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != EC_CURVES[algorithm]:
        raise ConfigError("--token-public-key: %r is not an EC key on curve %s, which "
                          "--token-algorithm %s needs" % (path, EC_CURVES[algorithm], algorithm))
    return key


def acme_values(options, domains, key_type):
    """state_dir and ca_bundle, for the certificate of `domains` with a `key_type` key."""
    if not domains:
        raise ConfigError("--tls-mode automate needs at least one --tls-domain")
    if key_type not in ACME_KEY_TYPES:
        raise ConfigError(
            "--tls-key-type %s cannot be used with --tls-mode automate: ACME CAs issue only "
            "%s certificates" % (key_type, ", ".join(ACME_KEY_TYPES)))
    provider = options.tls_dns_provider
    wildcards = [domain for domain in domains if domain.startswith("*.")]
    if wildcards and not provider:
        raise ConfigError(
            "--tls-domain %s: wildcard certificates need the DNS-01 challenge; set "
            "--tls-dns-provider (rfc2136 or exec)" % wildcards[0])
    if "localhost" in domains:
        raise ConfigError("--tls-domain localhost: no ACME CA issues certificates for it; "
                          "give the server's public name(s)")
    if not provider and options.tls_http01_port == options.ws_port and \
            _overlap(options.ws_host, options.tls_http01_address):
        raise ConfigError(
            "--tls-http01-port %d is also --ws-port: certbot's HTTP-01 server needs that port "
            "for itself; choose another one that the CA's port 80 reaches, or use DNS-01"
            % options.ws_port)
    params = dns_params(options.tls_dns_param)
    if provider:
        _check_provider_parameters(provider, params)
    elif params:
        raise ConfigError("--tls-dns-param is set but --tls-dns-provider is not")
    if bool(options.tls_eab_key_id) != bool(options.tls_eab_mac_key):
        raise ConfigError(
            "--tls-eab-key-id and --tls-eab-mac-key go together; set both or neither")
    ca_bundle = options.tls_acme_ca_bundle
    if ca_bundle and not (os.path.isfile(ca_bundle) and os.access(ca_bundle, os.R_OK)):
        raise ConfigError("--tls-acme-ca-bundle: %r is not a readable file" % ca_bundle)
    return dict(state_dir=os.path.abspath(options.tls_acme_state_dir),
                ca_bundle=os.path.abspath(ca_bundle) if ca_bundle else None)


def _overlap(address, other):
    wildcards = ("", "0.0.0.0", "::")
    return address in wildcards or other in wildcards or address == other


def _check_provider_parameters(provider, params):
    required, optional = PROVIDER_PARAMETERS[provider]
    missing = [key for key in required if not params.get(key)]
    if missing:
        raise ConfigError("--tls-dns-provider %s needs --tls-dns-param %s=..."
                          % (provider, missing[0]))
    unknown = sorted(set(params) - set(required) - set(optional))
    if unknown:
        raise ConfigError("--tls-dns-param %s: unknown parameter for %s (known: %s)"
                          % (unknown[0], provider, ", ".join(required + optional)))
    if provider == "rfc2136":
        _check_rfc2136_parameters(params)


def _check_rfc2136_parameters(params):
    try:
        port_number(params.get("port", "53"), "")
    except ValueError:
        raise ConfigError("--tls-dns-param port=%s: not a port number" % params["port"]) from None
    algorithm = params.get("algorithm", TSIG_ALGORITHMS[0])
    if algorithm not in TSIG_ALGORITHMS:
        raise ConfigError("--tls-dns-param algorithm=%s: not one of %s"
                          % (algorithm, ", ".join(TSIG_ALGORITHMS)))
    try:
        base64.b64decode(params["key_secret"], validate=True)
    except ValueError:
        raise ConfigError("--tls-dns-param key_secret: not base64 (as in BIND's key "
                          "files)") from None


def _resolve_executable(name):
    """The PHP binary's absolute path; a ConfigError that says what to do when there is none."""
    if not name:
        raise ConfigError("--php-executable is required")
    found = shutil.which(name)
    if found is not None:
        return found
    if os.sep not in name:  # looked up on PATH
        raise ConfigError("--php-executable: %r is not on PATH; install PHP's command-line "
                          "interpreter (Debian: apt install php-cli) or give the PHP binary's "
                          "full path" % name)
    if not os.path.exists(name):
        raise ConfigError("--php-executable: %r does not exist%s; give the PHP binary's path "
                          "(command -v php prints it)" % (name, _relative_to_here(name)))
    if os.path.isdir(name):
        raise ConfigError("--php-executable: %r is a directory; give the PHP binary's path" % name)
    raise ConfigError("--php-executable: %r is not executable (chmod +x it, or give the PHP "
                      "binary's path)" % name)


def _existing_file(option, path):
    if not path:
        raise ConfigError("%s is required" % option)
    if not os.path.isfile(path):
        raise ConfigError("%s: %r is not a file%s" % (option, path, _relative_to_here(path)))
    if not os.access(path, os.R_OK):
        raise ConfigError("%s: %r is not readable by this user (uid %d); make it readable "
                          "(chmod a+r) or run greenbridge as a user who can read it"
                          % (option, path, os.getuid()))
    return os.path.abspath(path)


def _relative_to_here(path):
    """Where a relative path was looked for, said in an error: the directory greenbridge
    started in, which is not the config file's."""
    if os.path.isabs(path):
        return ""
    return " (relative paths start at %s, the directory greenbridge started in)" % os.getcwd()
