"""Who may call the Gemini API surface: an API key, or an OAuth bearer token with a quota project."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from multidict import CIMultiDictProxy

from tunekeeper.emulator.errors import ApiError, error_info

if TYPE_CHECKING:
    from tunekeeper.emulator.state import EmulatorState

SERVICE = "generativelanguage.googleapis.com"


def authenticate(state: EmulatorState, headers: CIMultiDictProxy[str], query: Mapping[str, str], now: float) -> None:
    """API key (header or `?key=`) or OAuth bearer token with a quota project; with no keys configured, any.
    While credentials are revoked (a run-time setting), none."""
    api_keys = state.api_keys
    revoked = state.settings.credentials_revoked
    key = headers.get("x-goog-api-key") or query.get("key")
    if key:
        if revoked or (api_keys and key not in api_keys):
            raise ApiError(
                "PERMISSION_DENIED",
                "API key not valid. Please pass a valid API key.",
                [error_info(SERVICE, "API_KEY_INVALID")],
            )
        return
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        if revoked or (api_keys and token not in api_keys):
            raise ApiError(
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                "or other valid authentication credential.",
                [error_info(SERVICE, "ACCESS_TOKEN_INVALID")],
            )
        if not headers.get("x-goog-user-project"):
            raise ApiError(
                "PERMISSION_DENIED",
                "The generativelanguage.googleapis.com API requires a quota project, which is not set: "
                "send the x-goog-user-project header with OAuth credentials.",
                [error_info(SERVICE, "USER_PROJECT_REQUIRED")],
            )
        return
    raise ApiError(
        "UNAUTHENTICATED",
        "Method doesn't allow unregistered callers (callers without established identity). Please use API Key "
        "or other form of API consumer identity to call this API.",
        [error_info(SERVICE, "CREDENTIALS_MISSING")],
    )
