"""One API call over HTTP: send, classify the outcome into a typed error, retry transient failures."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import structlog

from tunekeeper import __version__
from tunekeeper.backends.googleapi.errors import (
    ConnectionFailed,
    MalformedResponse,
    RequestTimeout,
    ResponseTooLarge,
    ServiceError,
    TransientError,
    Unauthenticated,
    error_from_response,
    one_line,
)
from tunekeeper.backends.googleapi.observer import RequestObserver
from tunekeeper.backends.googleapi.retry import RetryPolicy, backoff_delay
from tunekeeper.backends.googleapi.tokens import TokenSource

T = TypeVar("T")
JsonObject = dict[str, Any]  # a request body; defined here, not taken from a service's package, which imports us
REDACTED = "[redacted]"
# The largest response body read. Google's answers here are small (an operation, a page of up to 1,000 models or
# tuning jobs, one generated text); a body beyond this is not an answer worth holding in memory.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# Of an error response's body, only so much is kept for its message.
MAX_ERROR_BODY_BYTES = 64 * 1024

log = structlog.get_logger(__name__)


def client_session(
    timeout: aiohttp.ClientTimeout, max_connections: int, headers: Mapping[str, str] | None = None
) -> aiohttp.ClientSession:
    """The session a service client sends on: our User-Agent, explicit timeouts, a connection limit."""
    return aiohttp.ClientSession(
        headers={"User-Agent": f"tunekeeper/{__version__}", **(headers or {})},
        timeout=timeout,
        connector=aiohttp.TCPConnector(limit=max_connections),
    )


class Transport:
    """Sends requests and retries transient failures. The credential is either an API key in the session's
    default headers (`secret`, redacted from error texts) or, with `tokens`, an OAuth access token put into each
    request's `Authorization` header: a 401 then invalidates the token and sends the request once more with a
    fresh one, and a second 401 is `Unauthenticated`.

    Errors and log lines name the route and method, never a URL or a header: the credential is only in a
    header, and the base URL is configuration that might one day carry credentials of its own.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        retry: RetryPolicy,
        secret: str = "",
        tokens: TokenSource | None = None,
        observer: RequestObserver | None = None,
        rng: random.Random | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._session = session
        self._max_response_bytes = max_response_bytes
        self._base_url = base_url.rstrip("/")
        self._retry = retry
        self._secret = secret
        self._tokens = tokens
        self._observer = observer
        self._rng = rng or random.Random()

    async def call(
        self,
        method: str,
        route: str,
        path: str,
        parse: Callable[[object], T],
        *,
        params: Mapping[str, str] | None = None,
        body: JsonObject | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        retries: int | None = None,
    ) -> T:
        """Send `method path` and return `parse(response JSON)`, retrying transient errors per the policy.

        The request body is `body` as JSON, or `data` as it is (with its Content-Type in `headers`).
        `parse` runs inside the retry loop, so a response it finds malformed is retried like a 503.
        `retries` overrides the policy's count: 0 for a request that must not be repeated blindly (a create
        whose answer may be lost after it took effect); a refused token is still renewed and the request resent.
        """
        attempt = 0
        token_refused = False
        while True:
            started = time.monotonic()
            try:
                http_status, document = await self._send(method, path, params, body, data, headers)
                try:
                    result = parse(document)
                except MalformedResponse as error:
                    message = self._redact(f"{route}: {error.message}")
                    raise MalformedResponse(message, http_status=http_status) from None
            except TransientError as error:
                self._finished(route, error, started)
                last = error
            except ServiceError as error:
                self._finished(route, error, started)
                if not self._token_expired(error):
                    raise
                if token_refused:
                    raise Unauthenticated(error.message, http_status=error.http_status, status=error.status) from None
                # A token can die before its time (revoked, or the server forgot it): one more try with a fresh
                # one, at once and outside the retry budget, since nothing is wrong with the service.
                token_refused = True
                log.info("api_token_refused", method=method, route=route)
                self._tokens.invalidate()  # type: ignore[union-attr]  # _token_expired checked it is set
                continue
            else:
                if self._observer is not None:
                    self._observer.request_finished(route, str(http_status), time.monotonic() - started)
                return result
            attempt += 1
            if attempt > (self._retry.max_retries if retries is None else retries):
                raise last
            delay = backoff_delay(attempt, self._retry, self._rng, last.retry_delay)
            log.warning(
                "api_retry",
                method=method,
                route=route,
                status=last.label,
                attempt=attempt,
                delay=round(delay, 3),
                error=str(last),
            )
            if self._observer is not None:
                self._observer.retry_scheduled(route, last.label, delay)
            await asyncio.sleep(delay)

    def _token_expired(self, error: ServiceError) -> bool:
        """A 401 to a request that carried a token; not one the token source raised itself."""
        return self._tokens is not None and error.http_status == 401 and not isinstance(error, Unauthenticated)

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: JsonObject | None,
        data: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> tuple[int, object]:
        """One HTTP exchange: the status and decoded JSON of a 2xx response, else a typed error."""
        request_headers = dict(headers or {})
        token = ""
        if self._tokens is not None:
            authorization = await self._tokens.authorization()  # typed errors of its own, retried like ours
            request_headers["Authorization"] = authorization
            token = authorization.partition(" ")[2]
        try:
            # No redirects: aiohttp would replay our headers, the credential among them, to wherever they point.
            async with self._session.request(
                method,
                self._base_url + path,
                params=params,
                json=body if data is None else None,
                data=data,
                headers=request_headers or None,
                allow_redirects=False,
            ) as response:
                http_status, reason = response.status, response.reason
                retry_after = response.headers.get("Retry-After")
                if 200 <= http_status < 300:
                    raw, complete = await _read_at_most(response, self._max_response_bytes)
                    if not complete:
                        raise ResponseTooLarge(
                            f"response body larger than {self._max_response_bytes} bytes: not read",
                            http_status=http_status,
                        )
                else:  # the status classifies an error; of its body, the start is message enough
                    raw, _ = await _read_at_most(response, MAX_ERROR_BODY_BYTES)
        except aiohttp.InvalidURL:
            raise  # a configuration mistake, not a service failure: retrying cannot help
        except TimeoutError as error:  # aiohttp's timeouts derive from it, including ServerTimeoutError
            raise RequestTimeout(self._redact(f"no response in time ({type(error).__name__})", token)) from None
        except aiohttp.ClientError as error:  # connection refused or reset, server disconnected, truncated body
            raise ConnectionFailed(self._redact(f"{type(error).__name__}: {error}", token)) from None
        if not 200 <= http_status < 300:
            text = self._redact(raw.decode("utf-8", errors="replace"), token)
            raise error_from_response(http_status, text, reason=reason, retry_after=retry_after)
        if not raw.strip() and http_status == 204:
            return http_status, {}
        try:
            return http_status, json.loads(raw)
        except ValueError:  # UnicodeDecodeError is a ValueError too
            snippet = one_line(self._redact(raw.decode("utf-8", errors="replace"), token))[:80]
            raise MalformedResponse(f"response body is not JSON: {snippet!r}", http_status=http_status) from None

    def _finished(self, route: str, error: ServiceError, started: float) -> None:
        if self._observer is not None:
            self._observer.request_finished(route, error.label, time.monotonic() - started)

    def _redact(self, text: str, token: str = "") -> str:
        """`text` without the API key and without `token` (the access token this request carried: tokens
        change over time, so each request redacts its own)."""
        for secret in (self._secret, token):
            if secret:
                text = text.replace(secret, REDACTED)
        return text


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of the body, and whether that is all of it. Reading stops at the limit; a body
    announced as longer is not read at all."""
    if response.content_length is not None and response.content_length > limit:
        return b"", False
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), False
    return bytes(body), True
