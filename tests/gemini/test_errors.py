"""HTTP error responses to typed errors: class, Google status and message, retry hints, one-line rendering."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tunekeeper.backends.googleapi.errors import (
    AlreadyExists,
    ConnectionFailed,
    InvalidArgument,
    MalformedResponse,
    NotFound,
    PermanentError,
    PermissionDenied,
    RequestTimeout,
    ServiceError,
    TransientError,
    error_from_response,
    parse_duration,
    parse_retry_after,
)


def google_error(code: int, status: str, message: str, details: list[object] | None = None) -> str:
    error: dict[str, object] = {"code": code, "status": status, "message": message}
    if details is not None:
        error["details"] = details
    return json.dumps({"error": error})


@pytest.mark.parametrize(
    ("http", "status", "expected"),
    [
        (400, "INVALID_ARGUMENT", InvalidArgument),
        (400, "FAILED_PRECONDITION", InvalidArgument),
        (401, "UNAUTHENTICATED", PermissionDenied),
        (403, "PERMISSION_DENIED", PermissionDenied),
        (404, "NOT_FOUND", NotFound),
        (409, "ALREADY_EXISTS", AlreadyExists),
        (409, "ABORTED", PermanentError),
        (429, "RESOURCE_EXHAUSTED", TransientError),
        (499, "CANCELLED", PermanentError),
        (500, "INTERNAL", TransientError),
        (501, "UNIMPLEMENTED", PermanentError),
        (502, "UNAVAILABLE", TransientError),
        (503, "UNAVAILABLE", TransientError),
        (504, "DEADLINE_EXCEEDED", TransientError),
    ],
)
def test_http_status_decides_the_class(http: int, status: str, expected: type[ServiceError]) -> None:
    error = error_from_response(http, google_error(http, status, "boom"))
    assert type(error) is expected
    assert error.http_status == http
    assert error.status == status
    assert error.message == "boom"


def test_transient_and_permanent_are_disjoint() -> None:
    assert issubclass(NotFound, PermanentError)
    assert not issubclass(NotFound, TransientError)
    for transient in (ConnectionFailed, RequestTimeout, MalformedResponse):
        assert issubclass(transient, TransientError)


def test_str_is_one_line_with_status_and_http_code() -> None:
    error = error_from_response(404, google_error(404, "NOT_FOUND", "Tuned model tunedModels/x\ndoes not exist."))
    assert str(error) == "NOT_FOUND (404): Tuned model tunedModels/x does not exist."


def test_str_without_http_response_names_what_happened() -> None:
    assert str(ConnectionFailed("refused")) == "UNAVAILABLE (connection_error): refused"
    assert str(RequestTimeout("slow")) == "DEADLINE_EXCEEDED (timeout): slow"
    assert str(MalformedResponse("garbage")) == "MALFORMED_RESPONSE (malformed): garbage"
    assert str(MalformedResponse("garbage", http_status=200)) == "MALFORMED_RESPONSE (200): garbage"
    assert MalformedResponse("garbage", http_status=200).label == "malformed"


def test_long_messages_are_cut() -> None:
    error = error_from_response(400, google_error(400, "INVALID_ARGUMENT", "x" * 5000))
    assert len(error.message) == 500
    assert error.message.endswith("...")


def test_retry_info_detail_gives_the_delay() -> None:
    details: list[object] = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": "q"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "15s"},
    ]
    error = error_from_response(429, google_error(429, "RESOURCE_EXHAUSTED", "slow down", details))
    assert error.retry_delay == 15.0


def test_retry_info_wins_over_retry_after() -> None:
    details: list[object] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.5s"}]
    error = error_from_response(429, google_error(429, "RESOURCE_EXHAUSTED", "m", details), retry_after="30")
    assert error.retry_delay == 0.5


def test_retry_after_header_alone() -> None:
    assert error_from_response(503, "", retry_after="7").retry_delay == 7.0


def test_html_error_page_falls_back_to_http_status() -> None:
    page = "<html><head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>"
    error = error_from_response(502, page, reason="Bad Gateway")
    assert type(error) is TransientError
    assert error.status == "UNAVAILABLE"
    assert error.message.startswith("HTTP 502 Bad Gateway; response body: '<html>")
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    "body",
    ['{"error": "nope"}', "[1, 2]", '{"error": {"status": 7, "message": ["x"], "details": "y"}}', "{trunc"],
)
def test_odd_error_bodies_never_raise(body: str) -> None:
    error = error_from_response(500, body, reason="Internal Server Error")
    assert type(error) is TransientError
    assert error.status == "INTERNAL"
    assert error.retry_delay is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("15s", 15.0), ("0.5s", 0.5), ("1.000340s", 1.00034), ({"seconds": "3", "nanos": 500_000_000}, 3.5)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["15", "s", "-1s", "1m", None, 15, {"seconds": "x"}, {"seconds": -5}])
def test_bad_durations(value: object) -> None:
    assert parse_duration(value) is None


def test_retry_after_as_http_date() -> None:
    now = datetime(2024, 3, 14, 15, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 14 Mar 2024 15:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Thu, 14 Mar 2024 14:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
