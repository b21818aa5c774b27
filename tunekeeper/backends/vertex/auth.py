"""OAuth 2.0 access tokens for Google Cloud APIs, from a service-account key file or Application Default
Credentials, through gcloud-aio-auth.

gcloud-aio-auth finds the credentials (the key file, else `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's ADC
file, else the metadata server), signs the JWT assertion and trades it at the key file's `token_uri`, for each
credential type it knows. The cache is ours: `Token.get()` keeps its expiry in whole seconds (with a 2-second
token it hands out one that has expired for up to a second) and wraps the fetch in five attempts up to a minute
apart on any exception, outside our retry policy. `GoogleTokens` calls the library's `refresh()` (one fetch)
and decides itself when a token is due, so the transport's retries and typed errors apply to token fetches too.

Secrets: the private key and the tokens are held in attributes only; no repr, log line or error text shows
them, and errors from the token endpoint carry its OAuth error code and description, nothing of the request.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import structlog
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from gcloud.aio.auth import Token

from tunekeeper.backends.googleapi.errors import (
    ConnectionFailed,
    MalformedResponse,
    RequestTimeout,
    ServiceError,
    TransientError,
    Unauthenticated,
    one_line,
)
from tunekeeper.backends.googleapi.tokens import TokenSource
from tunekeeper.config import KEY_FIELDS, gcloud_adc_file

__all__ = ["CLOUD_PLATFORM_SCOPE", "GoogleTokens", "TokenSource", "adc_file"]

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# google-auth refreshes this long before expiry (its REFRESH_THRESHOLD): a request that takes the token at the
# last moment still arrives while it is valid. Short-lived tokens (tests) refresh after 3/4 of their life.
REFRESH_MARGIN_SECONDS = 225.0
REFRESH_MARGIN_SHARE = 0.25

log = structlog.get_logger(__name__)


def adc_file(environ: dict[str, str] | None = None) -> Path | None:
    """Application Default Credentials' file, as google-auth looks for it: `GOOGLE_APPLICATION_CREDENTIALS`,
    then gcloud's `application_default_credentials.json`; None when neither is set or there (the metadata
    server is then the last resort, which the library asks)."""
    env = os.environ if environ is None else environ
    explicit = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    if explicit:
        return Path(explicit)  # named explicitly: a missing file is an error, not a reason to look elsewhere
    path = gcloud_adc_file(env)
    return path if path is not None and path.is_file() else None


class GoogleTokens:
    """A `TokenSource`: `"Bearer <access token>"` for `scopes`, fetched when missing or nearly expired.

    `key_file` is a service-account key (or any credentials file gcloud-aio-auth reads, such as gcloud's
    `authorized_user` ADC file); None means Application Default Credentials (`adc_file`). The file is read and
    checked here, so a wrong path or a broken file fails at start, naming the path only. Token requests go out
    on `session` (not closed here), or on a session of our own, closed by `close()` / `async with`.

    Concurrent callers share one fetch. `invalidate()` after a 401 makes the next caller fetch anew; 401s of
    several requests in flight may cause a fetch each (harmless: every token issued stays valid).
    """

    def __init__(
        self,
        *,
        key_file: str | Path | None = None,
        session: aiohttp.ClientSession | None = None,
        scopes: Sequence[str] = (CLOUD_PLATFORM_SCOPE,),
        request_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        path = Path(key_file) if key_file is not None else adc_file()
        info = _read_credentials(path) if path is not None else None
        self._source = str(path) if path is not None else "metadata server"
        self._account = str(info.get("client_email", "")) if info else ""
        service_file = io.StringIO(json.dumps(info)) if info is not None else None
        # Without a session the library makes one at the first fetch (inside the event loop) and closes it in
        # close(); a session passed in is left open.
        # The library types its session as requests' (it builds a sync variant from the same source); at run time
        # the aio build takes an aiohttp session.
        self._library = Token(service_file=service_file, session=session, scopes=list(scopes))  # type: ignore[arg-type]
        self._timeout = max(1, round(request_timeout))
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    def __repr__(self) -> str:  # no key, no token
        return f"GoogleTokens(source={self._source!r}, account={self._account!r})"

    async def authorization(self) -> str:
        token = self._current()
        if token is None:
            async with self._lock:  # one fetch for every caller that finds the token due
                token = self._current() or await self._fetch()
        return f"Bearer {token}"

    def invalidate(self) -> None:
        self._token = None

    async def close(self) -> None:
        await self._library.close()

    async def __aenter__(self) -> GoogleTokens:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _current(self) -> str | None:
        return self._token if self._token is not None and self._clock() < self._refresh_at else None

    async def _fetch(self) -> str:
        started = self._clock()  # expiry counts from before the request: never later than the server's
        try:
            response = await self._library.refresh(timeout=self._timeout)
        except aiohttp.ClientResponseError as error:  # an error status, or a 2xx that is not JSON
            raise _token_endpoint_error(error) from None
        except TimeoutError:
            raise RequestTimeout("token endpoint: no response in time") from None
        except aiohttp.ClientError as error:
            raise ConnectionFailed(f"token endpoint: {type(error).__name__}") from None
        except (KeyError, ValueError, TypeError) as error:  # the key was checked at start: the answer is at fault
            raise MalformedResponse(f"token endpoint: unusable answer ({type(error).__name__})") from None
        lifetime = float(response.expires_in)
        if not response.value or lifetime <= 0:
            raise MalformedResponse("token endpoint: an answer without a token or lifetime")
        margin = min(REFRESH_MARGIN_SECONDS, lifetime * REFRESH_MARGIN_SHARE)
        self._token = response.value
        self._refresh_at = started + lifetime - margin
        log.debug("access_token_fetched", account=self._account, expires_in=response.expires_in)
        return response.value


def _read_credentials(path: Path) -> dict[str, Any]:
    """The credentials file as a dict, checked enough that signing cannot fail later. Errors name the path and
    the field, never the content."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"cannot read the credentials file {str(path)!r}: {error.strerror}") from None
    except ValueError:
        raise ValueError(f"the credentials file {str(path)!r} is not JSON") from None
    if not isinstance(info, dict) or not isinstance(info.get("type"), str):
        raise ValueError(f"the credentials file {str(path)!r} has no `type`")
    if info["type"] == "service_account":
        for field in KEY_FIELDS["service_account"]:
            if not isinstance(info.get(field), str) or not info[field]:
                raise ValueError(f"the service-account key file {str(path)!r} lacks `{field}`")
        try:
            load_pem_private_key(info["private_key"].encode(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ValueError(f"the `private_key` of {str(path)!r} is not a PEM private key") from None
    return info


def _token_endpoint_error(error: aiohttp.ClientResponseError) -> ServiceError:
    """The token endpoint's refusal, typed: 4xx means these credentials will not do (Unauthenticated), 429 and
    5xx are worth retrying. The text is the OAuth error (`invalid_grant: Invalid JWT Signature.`)."""
    status = error.status
    if 200 <= status < 300:
        return MalformedResponse("token endpoint: the answer is not JSON", http_status=status)
    message = f"token endpoint refused: {_oauth_error(error.message)}"
    if status == 429 or status >= 500:
        return TransientError(message, http_status=status, status="UNAVAILABLE")
    return Unauthenticated(message, http_status=status, status="UNAUTHENTICATED")


def _oauth_error(message: str) -> str:
    """gcloud-aio-auth's message is `"<reason>: <body>"`; RFC 6749's body is `{"error", "error_description"}`."""
    _, _, body = message.partition(": ")
    try:
        document = json.loads(body)
    except ValueError:
        return one_line(message)[:200]
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        description = document.get("error_description")
        return one_line(f"{document['error']}: {description}" if isinstance(description, str) else document["error"])
    return one_line(message)[:200]
