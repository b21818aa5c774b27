"""Checking an RS256 JWT signed with a registered service account's key.

Two kinds of JWT reach the emulator: the assertion a client trades for an access token at the token endpoint,
and the self-signed JWT that Google's generated (GAPIC) clients send as the bearer token itself (AIP-4111).
Both follow the same rules, Google's: the header's `kid` names the key (a key file's `private_key_id`; without
one, the key of the account named by `iss`), the signature must verify against it, `iss` must be that key's
account, `exp` must lie ahead and at most an hour after `iat`. `aud` is never checked: google-auth writes
Google's own token URL or service URL there, gcloud-aio-auth writes the key file's `token_uri`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from tunekeeper.emulator.oauth.accounts import ServiceAccount, ServiceAccounts

MAX_LIFETIME = 3600.0  # exp - iat, in seconds, as Google allows
CLOCK_SKEW = 60.0  # how far in the future `iat` may lie
INVALID_SIGNATURE = "Invalid JWT Signature."
BAD_TIMEFRAME = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
    "Check your iat and exp values in the JWT claim."
)


class InvalidJwt(Exception):
    """Why a JWT was refused, in words safe to hand back (never the JWT or a key)."""

    def __init__(self, description: str, *, expired: bool = False) -> None:
        super().__init__(description)
        self.description = description
        self.expired = expired


@dataclass(frozen=True, slots=True)
class VerifiedJwt:
    account: ServiceAccount
    claims: dict[str, Any]
    expires_at: float


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJwt(f"Invalid JWT: the {name} claim must be a number of seconds since the epoch.")
    return float(value)


def _signing_account(accounts: ServiceAccounts, token: str) -> ServiceAccount:
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise InvalidJwt("Invalid JWT: not a well-formed JSON Web Token.") from None
    if header.get("alg") != "RS256":
        raise InvalidJwt("Invalid JWT: the algorithm (alg) must be RS256.")
    key_id = header.get("kid")
    if isinstance(key_id, str):
        account = accounts.by_key_id(key_id)
    else:  # gcloud-aio-auth names no key; Google then tries the keys of the account in `iss`
        issuer = unverified.get("iss")
        account = accounts.by_email(issuer) if isinstance(issuer, str) else None
    if account is None:
        raise InvalidJwt(INVALID_SIGNATURE)  # what Google answers for a deleted or unknown key
    return account


def verify_jwt(accounts: ServiceAccounts, token: str, now: float) -> VerifiedJwt:
    """The JWT's account and claims, if it passes every rule above; else InvalidJwt."""
    account = _signing_account(accounts, token)
    try:
        # Times are checked below against the request's time; PyJWT checks the signature and the claims' presence.
        claims: dict[str, Any] = jwt.decode(
            token,
            account.public_key,
            algorithms=["RS256"],
            options={
                "verify_aud": False,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["iss", "iat", "exp"],
            },
        )
    except jwt.InvalidSignatureError:
        raise InvalidJwt(INVALID_SIGNATURE) from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidJwt(f"Invalid JWT: the {exc.claim} claim is missing.") from None
    except jwt.PyJWTError:
        raise InvalidJwt("Invalid JWT: not a well-formed JSON Web Token.") from None
    if claims["iss"] != account.client_email:
        raise InvalidJwt("Invalid JWT: the issuer (iss) is not the service account whose key signed it.")
    issued_at, expires_at = _number(claims, "iat"), _number(claims, "exp")
    if expires_at <= now:
        raise InvalidJwt(BAD_TIMEFRAME, expired=True)
    if issued_at > now + CLOCK_SKEW or expires_at - issued_at > MAX_LIFETIME or expires_at <= issued_at:
        raise InvalidJwt(BAD_TIMEFRAME)
    return VerifiedJwt(account, claims, expires_at)
