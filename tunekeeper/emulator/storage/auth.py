"""Who may call Cloud Storage: a bearer token the emulator issued, or nobody at all with `--anonymous-storage`.

Google's storage clients pointed at an emulator by `STORAGE_EMULATOR_HOST` send no Authorization header unless
told to: google-cloud-storage sends one when given credentials explicitly, gcloud-aio-storage never does under
`STORAGE_EMULATOR_HOST` (only with `api_root=...` and `api_is_dev=False`). `--anonymous-storage` lets such
clients in; a token that is present must still be valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from multidict import CIMultiDictProxy

from tunekeeper.emulator.errors import ApiError
from tunekeeper.emulator.oauth.tokens import bearer_token
from tunekeeper.emulator.routing import Authenticator
from tunekeeper.emulator.storage.errors import StorageError

if TYPE_CHECKING:
    from tunekeeper.emulator.state import EmulatorState

_AUTHORIZATION = ("header", "Authorization")


def requiring(permission: str) -> Authenticator:
    """The authentication of a route that needs `permission` (e.g. "storage.objects.get"), named in the 401."""

    def authenticate(
        state: EmulatorState, headers: CIMultiDictProxy[str], query: Mapping[str, str], now: float
    ) -> None:
        token = bearer_token(headers)
        if token is None:
            if state.config.anonymous_storage:
                return
            raise StorageError(
                401,
                "required",
                f"Anonymous caller does not have {permission} access to the Google Cloud Storage resource.",
                location=_AUTHORIZATION,
            )
        _check_token(state, token, now)

    return authenticate


def session_holder(state: EmulatorState, headers: CIMultiDictProxy[str], query: Mapping[str, str], now: float) -> None:
    """A resumable upload's session URL is its own credential: no token needed, but one that is sent must be valid."""
    token = bearer_token(headers)
    if token is None:
        return
    _check_token(state, token, now)


def _check_token(state: EmulatorState, token: str, now: float) -> None:
    """An issued, unexpired token, while credentials are not revoked; else 401 authError."""
    try:
        if state.settings.credentials_revoked:
            raise ApiError("UNAUTHENTICATED", "credentials revoked")
        state.tokens.check(token, now)
    except ApiError:
        raise StorageError(401, "authError", "Invalid Credentials", location=_AUTHORIZATION) from None
