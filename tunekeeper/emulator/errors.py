"""Google's error shape: `{"error": {"code": HTTP, "message", "status", "details"?}}`, and its detail types."""

from __future__ import annotations

from typing import Any

HTTP_CODE_BY_STATUS: dict[str, int] = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

# google.rpc.Code numbers: what an operation's `error.code` carries (not the HTTP code).
RPC_CODE_BY_STATUS: dict[str, int] = {
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}

_TYPE_PREFIX = "type.googleapis.com/google.rpc."


class ApiError(Exception):
    """An error answer. Raised anywhere in request handling; the dispatcher renders it."""

    def __init__(
        self,
        status: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers = headers
        self.http_code = HTTP_CODE_BY_STATUS[status]

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.http_code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def proto_duration(seconds: float) -> str:
    """google.protobuf.Duration in JSON: `"1s"`, `"0.050s"`."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.3f}".rstrip("0") + "s"


def retry_info(seconds: float) -> dict[str, Any]:
    return {"@type": _TYPE_PREFIX + "RetryInfo", "retryDelay": proto_duration(seconds)}


def quota_failure(metric: str, quota_id: str, description: str) -> dict[str, Any]:
    return {
        "@type": _TYPE_PREFIX + "QuotaFailure",
        "violations": [{"quotaMetric": metric, "quotaId": quota_id, "description": description}],
    }


def bad_request(field: str, description: str) -> dict[str, Any]:
    return {
        "@type": _TYPE_PREFIX + "BadRequest",
        "fieldViolations": [{"field": field, "description": description}],
    }


def error_info(service: str, reason: str) -> dict[str, Any]:
    """`service` is the API's host name, e.g. "aiplatform.googleapis.com"."""
    return {
        "@type": _TYPE_PREFIX + "ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": service},
    }


def retry_after_header(seconds: float) -> dict[str, str]:
    # HTTP allows whole seconds only; RetryInfo carries the exact delay.
    return {"Retry-After": str(round(seconds))}


def invalid_argument(message: str, field: str | None = None) -> ApiError:
    details = [bad_request(field, message)] if field else None
    return ApiError("INVALID_ARGUMENT", message, details)
