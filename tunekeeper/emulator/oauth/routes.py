"""The token endpoint, `POST /token` (Google's `https://oauth2.googleapis.com/token`).

It needs no credential (the assertion is the credential), and injected faults and the request limit never
apply to it (`faults=False`): they are there to test how a client copes with the services, and a token that
cannot be had would fail every test before it starts. Added latency still applies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from aiohttp import web
from multidict import CIMultiDictProxy

from tunekeeper.emulator.oauth.accounts import TOKEN_PATH
from tunekeeper.emulator.oauth.grant import OAuthError, exchange
from tunekeeper.emulator.routing import Call, Resolved, Route

if TYPE_CHECKING:
    from tunekeeper.emulator.state import EmulatorState

# RFC 6749 section 5.1: token answers must not be cached.
_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
    "Pragma": "no-cache",
}


def oauth_response(payload: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(payload).encode(), status=status, headers=_HEADERS)


def no_credentials(state: EmulatorState, headers: CIMultiDictProxy[str], query: Mapping[str, str], now: float) -> None:
    """The token endpoint's authentication: none, the assertion in the body is the credential."""


def parse_form(call: Call) -> dict[str, str]:
    """The request's parameters: a form body, as every client sends, or a JSON object of strings."""
    try:
        text = call.body.decode("utf-8")
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "The request body is not UTF-8.") from None
    if call.headers.get("Content-Type", "").partition(";")[0].strip().lower() == "application/json":
        try:
            value = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            raise OAuthError("invalid_request", "The request body is not valid JSON.") from None
        if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
            raise OAuthError("invalid_request", "The request body must be a JSON object of strings.")
        return value
    form: dict[str, str] = {}
    for name, values in parse_qs(text, keep_blank_values=True).items():
        if len(values) > 1:  # RFC 6749 section 3.2
            raise OAuthError("invalid_request", f"Parameter given more than once: {name[:100]}")
        form[name] = values[0]
    return form


def expires_in(lifetime: float) -> int:
    # Whole seconds, at least 1: gcloud-aio-auth reads 0 as "no lifetime given" and assumes an hour.
    return max(1, math.floor(lifetime))


def issue_token(state: EmulatorState, call: Call) -> web.Response:
    try:
        issued = exchange(state, parse_form(call), call.now)
    except OAuthError as error:
        return oauth_response(error.body(), 400)
    return oauth_response(
        {"access_token": issued.access_token, "expires_in": expires_in(state.tokens.lifetime), "token_type": "Bearer"}
    )


TOKEN = Route("oauth2.token", issue_token, no_credentials, reads_body=True, faults=False)


class OAuthSurface:
    """`POST /token`."""

    def resolve(self, method: str, path: str, raw_path: str) -> Resolved | None:
        if path == TOKEN_PATH and method == "POST":
            return Resolved(TOKEN, {})
        return None
