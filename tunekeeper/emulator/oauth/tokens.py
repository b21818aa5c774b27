"""Bearer tokens: issued by the token endpoint, demanded by the Google Cloud surfaces (Vertex AI, Storage).

A token is an opaque random string mapped to whom it was issued and when it expires. Tokens are secrets: they
are never logged, and only their holder can present them.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from multidict import CIMultiDictProxy

from tunekeeper.emulator.errors import ApiError, error_info

if TYPE_CHECKING:
    from tunekeeper.emulator.state import EmulatorState

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


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

    def _forget_expired(self, now: float) -> None:
        # Bounded memory for long runs with short lifetimes: drop what can never be accepted again.
        if len(self._tokens) >= 1024:
            self._tokens = {key: token for key, token in self._tokens.items() if token.expires_at > now}


def unauthenticated(reason: str) -> ApiError:
    return ApiError(
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
        "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        [error_info("aiplatform.googleapis.com", reason)],
    )


def bearer_token(headers: CIMultiDictProxy[str]) -> str | None:
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def require_bearer(state: EmulatorState, headers: CIMultiDictProxy[str], query: Mapping[str, str], now: float) -> None:
    """The Google Cloud surfaces' authentication: a token this emulator issued, not yet expired."""
    token = bearer_token(headers)
    if token is None:
        raise unauthenticated("CREDENTIALS_MISSING")
    state.tokens.check(token, now)
