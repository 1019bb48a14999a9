"""Connection tokens, unit by unit: tokens minted by PyJWT (the reference) and hand-written
token strings for the malformed and the forged; no server."""

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from greenbridge.channels.token_verifier import TokenVerifier
from greenbridge.channels.tokens import ConnectionToken, TokenError, presented_token, without_token
from support import TOKEN_SECRET as SECRET
from support import hand_made_token as hand_made

def hs256(claims, secret=SECRET):
    return jwt.encode(claims, secret, algorithm="HS256")


def refusal(verifier, token):
    with pytest.raises(TokenError) as refused:
        verifier.verify(token)
    message = str(refused.value)
    assert "\n" not in message and SECRET not in message
    return message


def test_a_valid_token_gives_its_user_channels_and_info_as_given():
    info = {"name": "Alice", "roles": ["admin"], "n": 1.5}
    token = hs256({"sub": "alice", "exp": int(time.time()) + 60, "nbf": int(time.time()) - 5,
                   "channels": ["news", "chat:1"], "info": info})
    assert TokenVerifier("HS256", SECRET).verify(token) == ConnectionToken(
        "alice", ("news", "chat:1"), info)


def test_an_empty_sub_is_an_anonymous_user_and_the_other_claims_are_optional():
    assert TokenVerifier("HS256", SECRET).verify(hs256({"sub": ""})) == ConnectionToken("")


@pytest.mark.parametrize("claims,why", [
    ({"sub": "u", "exp": int(time.time()) - 10}, "token expired"),
    ({"sub": "u", "nbf": int(time.time()) + 3600}, "token not yet valid (nbf)"),
    ({"exp": int(time.time()) + 60}, "token without a sub claim"),
    ({"sub": 42}, "token sub claim is not a string"),
    ({"sub": "a\x00b"}, "token sub claim is not a string of text"),
    ({"sub": "\ud800"}, "token sub claim is not a string of text"),
    ({"sub": "u", "channels": "news"}, "bad channels claim: a list of channel names, not str"),
    ({"sub": "u", "channels": ["ok", "bad name"]}, "bad channels claim: channel name 'bad name'"),
    ({"sub": "u", "channels": ["ok", 7]}, "bad channels claim: a channel name must be a string"),
    ({"sub": "u", "channels": ["c%d" % n for n in range(1025)]},
     "bad channels claim: 1025 channels, at most 1024"),
    ({"sub": "u", "exp": "soon"}, "malformed token"),
])
def test_each_bad_claim_is_refused_saying_why(claims, why):
    assert refusal(TokenVerifier("HS256", SECRET), hs256(claims)).startswith(why)


def test_a_token_signed_with_another_secret_is_a_bad_signature():
    token = hs256({"sub": "u"}, secret="another-secret-of-at-least-32-bytes-long")
    assert refusal(TokenVerifier("HS256", SECRET), token) == "bad token signature"


def test_only_the_configured_algorithm_is_accepted():
    token = jwt.encode({"sub": "u"}, SECRET + "x" * 40, algorithm="HS512")
    assert refusal(TokenVerifier("HS256", SECRET), token) == \
        "token algorithm 'HS512' is not the one accepted, HS256"


def test_alg_none_is_refused_even_when_the_payload_is_fine():
    token = hand_made({"alg": "none", "typ": "JWT"}, '{"sub": "admin"}')
    assert token.endswith(".")  # no signature at all
    assert refusal(TokenVerifier("HS256", SECRET), token) == \
        "token algorithm 'none' is not the one accepted, HS256"


def test_an_hmac_token_keyed_with_the_public_key_is_refused():
    """The classic confusion: sign HS256 with the server's public key PEM as the secret."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = hand_made({"alg": "HS256", "typ": "JWT"}, '{"sub": "admin"}', sign_with=pem)
    verifier = TokenVerifier("RS256", public)
    assert refusal(verifier, forged) == "token algorithm 'HS256' is not the one accepted, RS256"
    assert verifier.verify(jwt.encode({"sub": "u"}, private, algorithm="RS256")).user == "u"


def test_es256_tokens_verify_with_the_public_key_and_a_foreign_key_is_a_bad_signature():
    private = ec.generate_private_key(ec.SECP256R1())
    verifier = TokenVerifier("ES256", private.public_key())
    assert verifier.verify(jwt.encode({"sub": "e", "channels": ["x"]}, private,
                                      algorithm="ES256")) == ConnectionToken("e", ("x",))
    foreign = ec.generate_private_key(ec.SECP256R1())
    assert refusal(verifier, jwt.encode({"sub": "e"}, foreign, algorithm="ES256")) == \
        "bad token signature"


@pytest.mark.parametrize("token", [
    "", "abc", "a.b", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.%%%.sig",
    hand_made({"alg": "HS256"}, "not json", sign_with=SECRET.encode()),
    hand_made({"alg": "HS256"}, "[1, 2]", sign_with=SECRET.encode()),
    # JSON that Python reads but no time is: PyJWT's int() would overflow.
    hand_made({"alg": "HS256"}, '{"sub": "u", "exp": Infinity}', sign_with=SECRET.encode()),
    hand_made({"alg": "HS256"}, '{"sub": "u", "nbf": NaN}', sign_with=SECRET.encode()),
    hand_made({"alg": "HS256"}, '{"sub": "u", "exp": null}', sign_with=SECRET.encode()),
    "\u00e9\u00e9.\u00e9.\u00e9",
])
def test_malformed_tokens_are_refused_in_one_line(token):
    assert refusal(TokenVerifier("HS256", SECRET), token).startswith(
        ("malformed token", "token algorithm None"))


def test_the_token_comes_from_the_query_or_a_bearer_header_and_never_twice():
    assert presented_token("a=1&token=abc&b=2", None) == "abc"
    assert presented_token("", "Bearer xyz") == "xyz"
    assert presented_token("", "bearer  xyz ") == "xyz"
    assert presented_token("a=1", "Basic dTpw") is None  # the application's own scheme
    assert presented_token("", None) is None
    for query, header in (("token=a&token=b", None), ("token=a", "Bearer b")):
        with pytest.raises(TokenError, match="more than one token"):
            presented_token(query, header)


def test_the_log_never_shows_a_token():
    assert without_token("/sub?token=eyJ.abc.def&room=1") == "/sub?token=...&room=1"
    assert without_token("/sub?room=1&token=eyJ.abc.def") == "/sub?room=1&token=..."
    assert without_token("/sub?mytoken=kept") == "/sub?mytoken=kept"
