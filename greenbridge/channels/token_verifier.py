"""TokenVerifier: a connection token's signature and claims, checked with PyJWT.

Imported only when tokens are configured (PyJWT loads cryptography); what a
token is and how it is presented is tokens.py.
"""

import jwt

from greenbridge.channels.tokens import (ConnectionToken, TokenError, checked_channels, is_text,
                                         shown)

# PyJWT's own checks of the claims that greenbridge does not use are left out,
# as Centrifugo leaves them: aud and iss (no audience or issuer is configured)
# and iat (a clock a little ahead on the signing host must not refuse fresh tokens);
# sub is checked here, with a message of greenbridge's.
_DECODE_OPTIONS = {"require": ["sub"], "verify_aud": False, "verify_iss": False,
                   "verify_iat": False, "verify_sub": False}


class TokenVerifier:
    """Verifies tokens of one algorithm with one key: the secret (HS*) or a public key."""

    def __init__(self, algorithm, key):
        self.algorithm = algorithm
        self._key = key

    def verify(self, token):
        """The ConnectionToken of a valid token; TokenError with the reason otherwise."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise TokenError("malformed token (not a JWT)") from None
        if algorithm != self.algorithm:
            raise TokenError("token algorithm %s is not the one accepted, %s"
                             % (shown(algorithm), self.algorithm))
        try:
            claims = jwt.decode(token, self._key, algorithms=[self.algorithm],
                                options=_DECODE_OPTIONS)
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token not yet valid (nbf)") from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad token signature") from None
        except jwt.MissingRequiredClaimError:
            raise TokenError("token without a sub claim (the user; \"\" for anonymous)") from None
        except jwt.PyJWTError as error:
            raise TokenError("malformed token (%s)" % shown(str(error))) from None
        except (ValueError, TypeError, OverflowError):
            # PyJWT's int() of an exp or nbf that JSON allowed (Infinity, NaN, 1e400).
            raise TokenError("malformed token (exp or nbf is not a time)") from None
        if not is_text(claims["sub"]):
            raise TokenError("token sub claim is not a string of text (no NUL, valid UTF-8)")
        return ConnectionToken(claims["sub"], checked_channels(claims.get("channels", [])),
                               claims.get("info"))
