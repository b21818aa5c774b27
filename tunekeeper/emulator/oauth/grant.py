"""The JWT-bearer grant (RFC 7523): a signed assertion traded for an access token, with OAuth's own errors.

The token endpoint's errors are OAuth's shape (RFC 6749 section 5.2), `{"error", "error_description"}` with
HTTP 400, not Google's API error shape: google-auth raises `RefreshError("invalid_grant: Invalid JWT
Signature.")` from it, and gcloud-aio-auth an `aiohttp.ClientResponseError` whose message carries the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from tunekeeper.emulator.oauth.jwts import InvalidJwt, verify_jwt
from tunekeeper.emulator.oauth.scopes import parse_scopes, usable
from tunekeeper.emulator.oauth.tokens import IssuedToken

if TYPE_CHECKING:
    from tunekeeper.emulator.state import EmulatorState

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
INVALID_SCOPE = "Invalid OAuth scope or ID token audience provided."
_ECHO_LIMIT = 100  # characters of a client's own grant_type shown back to it


class OAuthError(Exception):
    """An answer of the token endpoint other than a token: always HTTP 400."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def exchange(state: EmulatorState, form: Mapping[str, str], now: float) -> IssuedToken:
    """Check the grant's parameters and its assertion; issue a token for the assertion's service account."""
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError("invalid_request", "Missing required parameter: grant_type")
    if grant_type != JWT_BEARER_GRANT:
        raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant_type[:_ECHO_LIMIT]}")
    assertion = form.get("assertion")
    if not assertion:
        raise OAuthError("invalid_request", "Missing required parameter: assertion")
    if state.settings.credentials_revoked:  # what Google answers once the signing key is deleted
        raise OAuthError("invalid_grant", "Invalid JWT Signature.")
    try:
        verified = verify_jwt(state.service_accounts, assertion, now)
    except InvalidJwt as exc:
        raise OAuthError("invalid_grant", exc.description) from None
    scopes = parse_scopes(verified.claims.get("scope"))
    if not scopes:
        # Google's answer to an assertion without a scope (and without a target_audience for an ID token).
        raise OAuthError("invalid_scope", INVALID_SCOPE)
    if not usable(scopes):
        raise OAuthError(
            "invalid_scope",
            f"{INVALID_SCOPE} None of the scopes opens Vertex AI or Cloud Storage: ask for "
            "https://www.googleapis.com/auth/cloud-platform or a devstorage scope.",
        )
    return state.tokens.issue(verified.account.client_email, scopes, now)
