"""Connection tokens at the upgrade, through a real bridge: tokens minted by PyJWT (and forged
by hand), refusals answered 401 before any PHP starts, what PHP is told of a valid one, the
channels it subscribes, secrets kept from PHP and the log, start-up checks of the settings."""

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from support import TOKEN_SECRET as SECRET
from support import (access_lines, admin_port, assert_no_other_connection_ran, php_environment,
                     run_cli, scrape, stopped_log, value, wait_until)
from support import hand_made_token as hand_made

API_KEY = "an-api-key-nobody-may-see-0123456789"


def refused(bridge, path="/", **options):
    """(status, body) of an upgrade the bridge refuses."""
    with pytest.raises(InvalidStatus) as refusal:
        with connect(bridge.url(path), open_timeout=20, **options):
            pass
    return refusal.value.response.status_code, refusal.value.response.body.decode()


def hs256(claims, secret=SECRET):
    return jwt.encode(claims, secret, algorithm="HS256")


def public_pem(private_key, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(path)


def channel_numbers(port):
    samples = scrape(port)
    return (value(samples, "greenbridge_channels"),
            value(samples, "greenbridge_channel_subscriptions"))


# -- refusals: 401, one line, no PHP ---------------------------------------------------

def test_every_invalid_token_is_401_with_one_line_and_starts_no_php(start_bridge):
    bridge = start_bridge("--token-secret", SECRET)
    now = int(time.time())
    attempts = {
        "expired": ("/?token=" + hs256({"sub": "u", "exp": now - 5}), {}),
        "not yet valid": ("/?token=" + hs256({"sub": "u", "nbf": now + 3600}), {}),
        "wrongly signed": ("/?token=" + hs256({"sub": "u"}, "x" * 40), {}),
        "malformed": ("/?token=not.a.jwt", {}),
        "alg none": ("/?token=" + hand_made({"alg": "none"}, '{"sub": "admin"}'), {}),
        "another algorithm": ("/?token=" + jwt.encode({"sub": "u"}, SECRET * 2, "HS512"), {}),
        "bad channels": ("/?token=" + hs256({"sub": "u", "channels": ["no spaces"]}), {}),
        "no sub": ("/?token=" + hs256({"channels": ["news"]}), {}),
        "bearer, expired": ("/", {"additional_headers": {
            "Authorization": "Bearer " + hs256({"sub": "u", "exp": now - 5})}}),
        "two tokens": ("/?token=" + hs256({"sub": "a"}), {"additional_headers": {
            "Authorization": "Bearer " + hs256({"sub": "b"})}}),
    }
    reasons = {}
    for name, (path, options) in attempts.items():
        status, body = refused(bridge, path, **options)
        assert status == 401, name
        reasons[name] = body.strip()
    assert reasons == {
        "expired": "token expired",
        "not yet valid": "token not yet valid (nbf)",
        "wrongly signed": "bad token signature",
        "malformed": "malformed token (not a JWT)",
        "alg none": "token algorithm 'none' is not the one accepted, HS256",
        "another algorithm": "token algorithm 'HS512' is not the one accepted, HS256",
        "bad channels": "bad channels claim: channel name 'no spaces' has a character outside "
                        "A-Z a-z 0-9 and _ - . : @ / = + # ! $ * , ; ~",
        "no sub": 'token without a sub claim (the user; "" for anonymous)',
        "bearer, expired": "token expired",
        "two tokens": "more than one token given (?token= and Authorization: Bearer hold one "
                      "between them)",
    }
    log = assert_no_other_connection_ran(bridge)
    refusal_lines = [line for line in log.splitlines() if "401 Unauthorized" in line]
    assert len(refusal_lines) == len(attempts), log
    assert "Traceback" not in log


def test_with_require_token_a_php_route_without_one_is_401(start_bridge):
    bridge = start_bridge("--token-secret", SECRET, "--require-token")
    assert refused(bridge, "/?do=env") == (
        401, "a token is required (?token= or Authorization: Bearer)\n")
    assert php_environment(bridge.url("/?token=" + hs256({"sub": "u"})))["WSS_USER"] == "u"
    log = stopped_log(bridge)
    assert len(access_lines(log)) == 1, log  # the one with a token


# -- a valid token ----------------------------------------------------------------------

def test_php_gets_the_user_and_info_of_a_valid_token_from_the_query_or_a_bearer_header(
        start_bridge):
    bridge = start_bridge("--token-secret", SECRET)
    info = {"name": "Jürgen", "roles": ["admin"], "n": 1.5}
    token = hs256({"sub": "alice", "exp": int(time.time()) + 60, "info": info})
    for environment in (php_environment(bridge.url("/?token=" + token)),
                        php_environment(bridge.url("/"), additional_headers={
                            "Authorization": "Bearer " + token})):
        assert environment["WSS_USER"] == "alice"
        assert json.loads(environment["WSS_TOKEN_INFO"]) == info
    anonymous = php_environment(bridge.url("/?token=" + hs256({"sub": ""})))
    assert anonymous["WSS_USER"] == "" and "WSS_TOKEN_INFO" not in anonymous
    # Without --require-token a PHP route also takes a client without a token.
    without = php_environment(bridge.url("/"))
    assert "WSS_USER" not in without and "WSS_TOKEN_INFO" not in without
    log = stopped_log(bridge)
    assert token not in log and "token=..." in log  # the access log hides the token


def test_the_channels_of_a_token_are_subscribed_while_the_connection_lasts(start_bridge):
    bridge = start_bridge("--token-secret", SECRET, "--admin-port", "0")
    port = admin_port(bridge)
    assert channel_numbers(port) == (0, 0)
    token = hs256({"sub": "u", "channels": ["news", "chat:1", "news"]})
    with connect(bridge.url("/?token=" + token), open_timeout=20) as ws:
        ws.send(b"ping")
        assert ws.recv(timeout=20) == b"ping"  # PHP runs
        assert channel_numbers(port) == (2, 2)
        with connect(bridge.url("/?token=" + hs256({"sub": "v", "channels": ["news"]})),
                     open_timeout=20) as other:
            other.send(b"ping")
            assert other.recv(timeout=20) == b"ping"
            assert channel_numbers(port) == (2, 3)
    wait_until(lambda: channel_numbers(port) == (0, 0), 10, "no channel left")
    bridge.assert_serves()


@pytest.mark.parametrize("algorithm,private_key", [
    ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ("ES256", ec.generate_private_key(ec.SECP256R1())),
], ids=["RS256", "ES256"])
def test_public_key_tokens_verify_and_hmac_or_none_tokens_are_refused(start_bridge, tmp_path,
                                                                      algorithm, private_key):
    key_file = public_pem(private_key, tmp_path, "public.pem")
    bridge = start_bridge("--token-algorithm", algorithm, "--token-public-key", key_file)
    signed = jwt.encode({"sub": "pk", "info": {"k": algorithm}}, private_key, algorithm=algorithm)
    environment = php_environment(bridge.url("/?token=" + signed))
    assert (environment["WSS_USER"], environment["WSS_TOKEN_INFO"]) == (
        "pk", '{"k": "%s"}' % algorithm)
    with open(key_file, "rb") as pem:
        confused = hand_made({"alg": "HS256", "typ": "JWT"}, '{"sub": "admin"}',
                             sign_with=pem.read())
    assert refused(bridge, "/?token=" + confused) == (
        401, "token algorithm 'HS256' is not the one accepted, %s\n" % algorithm)
    unsigned = hand_made({"alg": "none"}, '{"sub": "admin"}')
    assert refused(bridge, "/?token=" + unsigned)[0] == 401
    foreign = ec.generate_private_key(ec.SECP256R1()) if algorithm == "ES256" else \
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refused(bridge, "/?token=" + jwt.encode({"sub": "x"}, foreign, algorithm=algorithm)) \
        == (401, "bad token signature\n")
    log = stopped_log(bridge)
    assert len(access_lines(log)) == 1, log  # only the valid token's connection ran PHP


# -- secrets ----------------------------------------------------------------------------

def test_the_token_secret_and_api_key_reach_neither_php_nor_the_log(start_bridge):
    bridge = start_bridge("--api-key", API_KEY, "--log-level", "debug", env={
        "WSS_CONFIG_TOKEN_SECRET": SECRET,
        # The same values under names PHP would inherit.
        "APP_JWT_SECRET": SECRET, "APP_API": "key=" + API_KEY})
    token = hs256({"sub": "u"})
    environment = php_environment(bridge.url("/?token=" + token), full=True)
    assert environment["WSS_USER"] == "u"  # the secret from the environment verified it
    for name, text in environment.items():
        assert SECRET not in text and API_KEY not in text, name
    assert "APP_JWT_SECRET" not in environment and "APP_API" not in environment
    log = stopped_log(bridge)
    assert SECRET not in log and API_KEY not in log and token not in log
    assert "not passed to PHP: APP_API, APP_JWT_SECRET" in log


# -- start-up checks ---------------------------------------------------------------------

def test_settings_that_cannot_verify_tokens_stop_start_up_with_one_line(tmp_path):
    rsa_file = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                          tmp_path, "rsa.pem")
    small_rsa_file = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024),
                                tmp_path, "small.pem")
    p384_file = public_pem(ec.generate_private_key(ec.SECP384R1()), tmp_path, "p384.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    script = ("-s", "conf/echo.php")
    cases = [
        (["--token-algorithm", "ES256", "--token-public-key", rsa_file],
         "--token-public-key: %r is not an EC key on curve secp256r1, which --token-algorithm "
         "ES256 needs" % rsa_file),
        (["--token-algorithm", "ES256", "--token-public-key", p384_file], "not an EC key on curve"),
        (["--token-algorithm", "RS256", "--token-public-key", str(garbage)],
         "is not a PEM public key"),
        (["--token-algorithm", "RS256", "--token-public-key", small_rsa_file],
         "is a 1024-bit RSA key; at least 2048 bits"),
        (["--token-algorithm", "RS256", "--token-public-key", str(tmp_path / "absent.pem")],
         "is not a file"),
        (["--token-public-key", rsa_file],
         "--token-algorithm HS256 signs with a shared secret: set --token-secret"),
        (["--token-algorithm", "RS256", "--token-secret", SECRET],
         "--token-algorithm RS256 verifies with a public key"),
        (["--token-secret", SECRET, "--token-public-key", rsa_file], "give one"),
        (["--token-secret", "short"], "--token-secret is 5 bytes; HS256 needs at least 32"),
        (["--token-algorithm", "none", "--token-secret", SECRET],
         "argument --token-algorithm: invalid choice"),
        (["--subscribe-route", "/live"], "--subscribe-route needs connection tokens"),
        (["--require-token"], "--require-token needs connection tokens"),
        (["--token-secret", SECRET, "--subscribe-route", "/live", "--route",
          "/live=conf/echo.php"], "--subscribe-route /live: the path is also a --route"),
        (["--subscriber-queue-size", "0"], "--subscriber-queue-size: invalid positive integer"),
    ]
    for args, complaint in cases:
        result = run_cli("-e", "php", *script, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert complaint in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert SECRET not in result.stderr
