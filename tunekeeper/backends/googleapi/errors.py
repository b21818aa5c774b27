"""Typed errors of the tuning service, and how an HTTP error response maps onto them.

Two families: `TransientError` (worth retrying later: throttling, server trouble, broken connections, garbled
responses) and `PermanentError` (retrying the same request cannot help). Every error renders as one line,
`"<STATUS> (<http>): <message>"`, where `<http>` is the HTTP status, or a word such as `timeout` when there was
no usable HTTP response.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Longest message kept from a response: enough for any Google error, short enough for one log line.
MAX_MESSAGE_CHARS = 500

# Google's canonical status names for HTTP statuses, used when a response carries no `error.status`.
_STATUS_BY_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",  # Cloud Storage's conditionNotMet (ifGenerationMatch and the like)
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
TRANSIENT_HTTP_STATUSES = frozenset({429, 500, 502, 503, 504})
_RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)s\s*$")


class ServiceError(Exception):
    """A request to the tuning service failed.

    `http_status` is None when no HTTP response arrived (connection error, timeout). `retry_delay` is the
    server's hint, in seconds, of how long to wait before retrying, if it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        status: str = "UNKNOWN",
        retry_delay: float | None = None,
    ) -> None:
        self.message = one_line(message)
        self.http_status = http_status
        self.status = status
        self.retry_delay = retry_delay
        super().__init__(self.message)

    @property
    def label(self) -> str:
        """What went wrong at the HTTP level: the status code as a string, or a word when there was none."""
        return str(self.http_status) if self.http_status is not None else "error"

    def __str__(self) -> str:
        return f"{self.status} ({self.http_status if self.http_status is not None else self.label}): {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class TransientError(ServiceError):
    """Worth retrying later: throttling (429), server errors (500, 502, 503, 504), network trouble."""


class ConnectionFailed(TransientError):
    """No HTTP response: the connection could not be made or broke off."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status="UNAVAILABLE")

    @property
    def label(self) -> str:
        return "connection_error"


class RequestTimeout(TransientError):
    """No complete HTTP response within the client's timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status="DEADLINE_EXCEEDED")

    @property
    def label(self) -> str:
        return "timeout"


class MalformedResponse(TransientError):
    """A response that is not what the API promises (not JSON, missing or mistyped fields).

    Transient because the usual causes (a proxy's error page, a truncated body, a service hiccup) pass.
    """

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message, http_status=http_status, status="MALFORMED_RESPONSE")

    @property
    def label(self) -> str:
        return "malformed"


class PermanentError(ServiceError):
    """Retrying the same request cannot succeed."""


class ResponseTooLarge(PermanentError):
    """A response body beyond the client's limit: not read further, since the same request would only bring the
    same flood again."""

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message, http_status=http_status, status="RESPONSE_TOO_LARGE")

    @property
    def label(self) -> str:
        return "too_large"


class NotFound(PermanentError):
    """404: the model or operation does not exist (the caller decides whether "already gone" is fine)."""


class AlreadyExists(PermanentError):
    """409 ALREADY_EXISTS: the tuned model id is taken (the caller adopts the existing model)."""


class InvalidArgument(PermanentError):
    """400: the service rejected the request itself."""


class FailedPrecondition(InvalidArgument):
    """400 FAILED_PRECONDITION: the request is fine but the resource is not in a state that allows it (cancel of
    an ended tuning job, delete of a model still deployed). A kind of InvalidArgument, as both are HTTP 400;
    `error_from_response` leaves 400s as InvalidArgument and clients that want the distinction refine them with
    `refine_precondition`."""


class PermissionDenied(PermanentError):
    """401/403: the API key is wrong or lacks access. Permanent for the job, and worth an operator's attention."""


class Unauthenticated(PermissionDenied):
    """401 that survived a fresh token, or a token that could not be had (the token endpoint refused the key).

    Raised by the transport of clients that authenticate with OAuth tokens; a kind of PermissionDenied, so
    callers that treat "credentials problem" alike need not know it."""


def refine_precondition(error: ServiceError) -> ServiceError:
    """FailedPrecondition in place of an InvalidArgument whose status says FAILED_PRECONDITION; else `error`."""
    if type(error) is InvalidArgument and error.status == "FAILED_PRECONDITION":
        return FailedPrecondition(
            error.message, http_status=error.http_status, status=error.status, retry_delay=error.retry_delay
        )
    return error


def one_line(text: str) -> str:
    """Collapse whitespace (newlines included) and cut to MAX_MESSAGE_CHARS, so an error is one log line."""
    collapsed = " ".join(text.split())
    if len(collapsed) > MAX_MESSAGE_CHARS:
        return collapsed[: MAX_MESSAGE_CHARS - 3] + "..."
    return collapsed


def error_from_response(
    http_status: int, body: str, *, reason: str | None = None, retry_after: str | None = None
) -> ServiceError:
    """The typed error for a non-2xx response, from Google's error JSON if present, else from the HTTP status."""
    status, message, hint = _parse_error_body(body)
    if status is None:
        status = _STATUS_BY_HTTP.get(http_status, "UNKNOWN")
    if message is None:
        message = _fallback_message(http_status, reason, body)
    if hint is None and retry_after is not None:
        hint = parse_retry_after(retry_after)
    error_type = _error_type(http_status, status)
    return error_type(message, http_status=http_status, status=status, retry_delay=hint)


def _error_type(http_status: int, status: str) -> type[ServiceError]:
    if http_status in TRANSIENT_HTTP_STATUSES:
        return TransientError
    if http_status == 404:
        return NotFound
    if http_status == 409 and status == "ALREADY_EXISTS":
        return AlreadyExists
    if http_status == 400:
        return InvalidArgument
    if http_status in (401, 403):
        return PermissionDenied
    return PermanentError


def _parse_error_body(body: str) -> tuple[str | None, str | None, float | None]:
    """Google's `{"error": {"status", "message", "details"}}`; any part that is absent or mistyped is None.

    Cloud Storage answers `{"error": {"code", "message", "errors": [...]}}` without `status`: its status then
    comes from the HTTP code, like any error body without one."""
    try:
        document = json.loads(body)
    except ValueError:
        return None, None, None
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None, None, None
    status = error.get("status")
    message = error.get("message")
    return (
        status if isinstance(status, str) and status else None,
        message if isinstance(message, str) and message else None,
        _retry_info_delay(error.get("details")),
    )


def _retry_info_delay(details: object) -> float | None:
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, dict) and detail.get("@type") == _RETRY_INFO_TYPE:
            return parse_duration(detail.get("retryDelay"))
    return None


def parse_duration(value: object) -> float | None:
    """A protobuf Duration as JSON ("15s", "0.5s"), or as {"seconds", "nanos"}; None if it is neither."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        return float(match.group(1)) if match else None
    if isinstance(value, dict):
        seconds, nanos = value.get("seconds", 0), value.get("nanos", 0)
        try:
            total = float(seconds) + float(nanos) / 1e9  # int64 seconds arrive as strings in proto JSON
        except (TypeError, ValueError):
            return None
        return total if total >= 0 else None
    return None


def parse_retry_after(value: str, *, now: datetime | None = None) -> float | None:
    """An HTTP Retry-After header: delay in seconds, or an HTTP date. None if unreadable."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _fallback_message(http_status: int, reason: str | None, body: str) -> str:
    """For error bodies that are not Google's JSON (a proxy's HTML page): the reason and the start of the body."""
    head = f"HTTP {http_status} {reason or ''}".strip()
    snippet = one_line(body)[:120]
    return f"{head}; response body: {snippet!r}" if snippet else head
