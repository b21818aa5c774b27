"""Bearer tokens: issued by the token endpoint, demanded by the Google Cloud surfaces (Vertex AI, Storage).

A token is an opaque random string mapped to whom it was issued and when it expires. Tokens are secrets: they
are never logged, and only their holder can present them. Google's generated (GAPIC) clients, such as
google-cloud-aiplatform's, skip the token endpoint and send a JWT signed with the key file's key as the
bearer token itself (AIP-4111); `require_bearer` accepts those too, when a registered key signed them.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from multidict import CIMultiDictProxy

from tunekeeper.emulator.errors import ApiError, error_info
from tunekeeper.emulator.oauth.jwts import InvalidJwt, verify_jwt
from tunekeeper.emulator.oauth.scopes import CLOUD_PLATFORM_SCOPE as CLOUD_PLATFORM_SCOPE
from tunekeeper.emulator.oauth.scopes import parse_scopes, usable

if TYPE_CHECKING:
    from tunekeeper.emulator.state import EmulatorState

# What Google's APIs send with a 401; RFC 6750 adds `error="invalid_token"` when a token was given but refused.
REALM = 'Bearer realm="https://accounts.google.com/"'
_JWT_PREFIX = "eyJ"  # base64url of '{"', how every JWT (and no issued token) begins


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    subject: str  # the service account's email
    scopes: frozenset[str]
    expires_at: float


class TokenRegistry:
    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self._tokens: dict[str, IssuedToken] = {}

    def issue(self, subject: str, scopes: frozenset[str], now: float) -> IssuedToken:
        token = IssuedToken("ya29.emulator-" + secrets.token_urlsafe(32), subject, scopes, now + self.lifetime)
        self._forget_expired(now)
        self._tokens[token.access_token] = token
        return token

    def check(self, access_token: str, now: float) -> IssuedToken:
        """The token's grant if it is known and unexpired; else 401 UNAUTHENTICATED, as Google answers."""
        token = self._tokens.get(access_token)
        if token is None or token.expires_at <= now:
            raise unauthenticated("ACCESS_TOKEN_EXPIRED" if token is not None else "ACCESS_TOKEN_INVALID")
        return token

    def reset(self) -> None:
        self._tokens.clear()

    def __len__(self) -> int:
        """How many tokens are held (expired ones included until they are swept)."""
        return len(self._tokens)

    def _forget_expired(self, now: float) -> None:
        # Bounded memory for long runs with short lifetimes: drop what can never be accepted again.
        if len(self._tokens) >= 1024:
            self._tokens = {key: token for key, token in self._tokens.items() if token.expires_at > now}


def unauthenticated(reason: str) -> ApiError:
    challenge = REALM if reason == "CREDENTIALS_MISSING" else f'{REALM}, error="invalid_token"'
    return ApiError(
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
        "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        [error_info("aiplatform.googleapis.com", reason)],
        {"WWW-Authenticate": challenge},
    )


def bearer_token(headers: CIMultiDictProxy[str]) -> str | None:
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def require_bearer(state: EmulatorState, headers: CIMultiDictProxy[str], query: Mapping[str, str], now: float) -> None:
    """The Google Cloud surfaces' authentication: a token this emulator issued, not yet expired, or a
    self-signed JWT of a registered service account; else 401 UNAUTHENTICATED with a WWW-Authenticate header.
    While credentials are revoked (a run-time setting), no token is good."""
    token = bearer_token(headers)
    if token is None:
        raise unauthenticated("CREDENTIALS_MISSING")
    if state.settings.credentials_revoked:
        raise unauthenticated("ACCESS_TOKEN_INVALID")
    if token.startswith(_JWT_PREFIX):
        check_self_signed(state, token, now)
    else:
        state.tokens.check(token, now)


def check_self_signed(state: EmulatorState, token: str, now: float) -> IssuedToken:
    """A self-signed JWT's grant. It must pass the token endpoint's rules (jwts.py) and, as AIP-4111 asks, carry
    a usable `scope` or an `aud` (the service's URL, which is not compared: the emulator has its own)."""
    try:
        verified = verify_jwt(state.service_accounts, token, now)
    except InvalidJwt as exc:
        raise unauthenticated("ACCESS_TOKEN_EXPIRED" if exc.expired else "ACCESS_TOKEN_INVALID") from None
    scopes = parse_scopes(verified.claims.get("scope"))
    if not usable(scopes) and not verified.claims.get("aud"):
        raise unauthenticated("ACCESS_TOKEN_INVALID")
    return IssuedToken(token, verified.account.client_email, scopes, verified.expires_at)
