"""Cloud Storage's JSON API error shape, which is not the rest of Google's.

`{"error": {"code": 404, "message": "No such object: b/o", "errors": [{"message": ..., "domain": "global",
"reason": "notFound"}]}}`: google-api-core (`from_http_response`) reads `error.message` and `error.errors`;
gcloud-aio-storage raises on the status. Errors raised elsewhere as `ApiError` (the object store, the
dispatcher's injected faults and rate limit) are translated here, their reason chosen from the status.
"""

from __future__ import annotations

from typing import Any

from tunekeeper.emulator.errors import ApiError

# An ApiError's status -> Cloud Storage's `reason` for it.
_REASON_BY_STATUS: dict[str, str] = {
    "NOT_FOUND": "notFound",
    "INVALID_ARGUMENT": "invalid",
    "FAILED_PRECONDITION": "conditionNotMet",
    "ALREADY_EXISTS": "conflict",
    "ABORTED": "conflict",
    "PERMISSION_DENIED": "forbidden",
    "UNAUTHENTICATED": "authError",
    "RESOURCE_EXHAUSTED": "rateLimitExceeded",
    "UNAVAILABLE": "backendError",
    "INTERNAL": "backendError",
}
_STATUS_BY_HTTP_CODE: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    416: "OUT_OF_RANGE",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


class StorageError(ApiError):
    """An error with Cloud Storage's own HTTP code and reason (412 conditionNotMet has no ApiError status)."""

    def __init__(
        self,
        http_code: int,
        reason: str,
        message: str,
        *,
        location: tuple[str, str] | None = None,  # (locationType, location), e.g. ("header", "Authorization")
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(_STATUS_BY_HTTP_CODE.get(http_code, "UNKNOWN"), message, headers=headers)
        self.http_code = http_code
        self.reason = reason
        self.location = location

    def body(self) -> dict[str, Any]:
        return _body(self.http_code, self.message, self.reason, self.location)


def storage_error_body(error: ApiError) -> dict[str, Any]:
    """The error answer of a Cloud Storage route."""
    if isinstance(error, StorageError):
        return error.body()
    return _body(error.http_code, error.message, _REASON_BY_STATUS.get(error.status, "backendError"), None)


def _body(code: int, message: str, reason: str, location: tuple[str, str] | None) -> dict[str, Any]:
    item: dict[str, Any] = {"message": message, "domain": "global", "reason": reason}
    if location is not None:
        item["locationType"], item["location"] = location
    return {"error": {"code": code, "message": message, "errors": [item]}}


def not_found_object(bucket: str, name: str) -> StorageError:
    return StorageError(404, "notFound", f"No such object: {bucket}/{name}")


def invalid(message: str) -> StorageError:
    return StorageError(400, "invalid", message)


def required(what: str) -> StorageError:
    return StorageError(400, "required", f"Required parameter: {what}", location=("parameter", what))


def condition_not_met(header: str) -> StorageError:
    return StorageError(
        412,
        "conditionNotMet",
        "At least one of the pre-conditions you specified did not hold.",
        location=("header", header),
    )
