"""The client against small real servers on loopback: what the emulator cannot do (proxy pages, garbled or cut
bodies, dropped connections, hangs, redirects, Retry-After), and what goes on the wire."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.gemini.conftest import API_KEY, RawHandler, Reply, ScriptedServer
from tunekeeper.backends.gemini import (
    AlreadyExists,
    ConnectionFailed,
    CreateTunedModelRequest,
    GeminiClient,
    InvalidArgument,
    MalformedResponse,
    ModelState,
    NotFound,
    PermanentError,
    PermissionDenied,
    RequestTimeout,
    RetryPolicy,
    ServiceError,
    TrainingExample,
    TransientError,
)
from tunekeeper.backends.googleapi.errors import ResponseTooLarge
from tunekeeper.backends.googleapi.transport import MAX_RESPONSE_BYTES

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)
MODEL = {"name": "tunedModels/m-1", "displayName": "m", "state": "ACTIVE", "baseModel": "models/base"}
OPERATION: dict[str, Any] = {
    "name": "tunedModels/m-1/operations/op-1",
    "metadata": {"totalSteps": 4, "tunedModel": "tunedModels/m-1"},
}
REQUEST = CreateTunedModelRequest("m-1", "m", "models/base", [TrainingExample("1", "2")], epoch_count=2)


class RecordingObserver:
    def __init__(self) -> None:
        self.finished: list[tuple[str, str]] = []
        self.retries: list[tuple[str, str, float]] = []

    def request_finished(self, route: str, status: str, seconds: float) -> None:
        assert seconds >= 0
        self.finished.append((route, status))

    def retry_scheduled(self, route: str, status: str, delay: float) -> None:
        self.retries.append((route, status, delay))


def client_for(base_url: str, observer: RecordingObserver | None = None, **options: Any) -> GeminiClient:
    options.setdefault("retry", FAST)
    return GeminiClient(base_url=base_url, api_key=API_KEY, observer=observer, **options)


def retries_in(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "api_retry"]


def assert_no_key(*texts: object) -> None:
    for text in texts:
        assert API_KEY not in str(text)


def test_the_client_does_not_show_its_key() -> None:
    assert API_KEY not in repr(GeminiClient(base_url="http://127.0.0.1:1", api_key=API_KEY))


async def test_key_only_in_the_header(scripted: ScriptedServer) -> None:
    scripted.script(Reply.json(OPERATION))
    async with client_for(scripted.base_url) as client:
        operation = await client.create_tuned_model(REQUEST)
    assert operation.tuned_model_name == "tunedModels/m-1"
    [seen] = scripted.seen
    assert seen.method == "POST"
    assert seen.path_qs == "/v1beta/tunedModels?tunedModelId=m-1"
    assert seen.headers["x-goog-api-key"] == API_KEY
    assert API_KEY not in seen.path_qs
    assert json.loads(seen.body) == REQUEST.to_json()


async def test_every_method_uses_its_documented_path(scripted: ScriptedServer) -> None:
    scripted.script(
        Reply.json(OPERATION),
        Reply.json({"operations": [OPERATION]}),
        Reply.json(MODEL),
        Reply.json({}),
        Reply.json({}),
        Reply.json({"candidates": [{"content": {"parts": [{"text": "II"}]}}]}),
        Reply.json({"tunedModels": [MODEL]}),
    )
    async with client_for(scripted.base_url) as client:
        assert (await client.get_operation(OPERATION["name"])).progress.total_steps == 4
        assert len(await client.find_operations("tunedModels/m-1")) == 1
        assert (await client.get_tuned_model("tunedModels/m-1")).state is ModelState.ACTIVE
        await client.cancel_operation(OPERATION["name"])
        await client.delete_tuned_model("tunedModels/m-1")
        assert await client.generate_text("tunedModels/m-1", "I") == "II"
        assert [m.name async for m in client.list_tuned_models(page_size=5, filter="owner:me")] == ["tunedModels/m-1"]
    assert [(s.method, s.path_qs) for s in scripted.seen] == [
        ("GET", "/v1/tunedModels/m-1/operations/op-1"),
        ("GET", "/v1/tunedModels/m-1/operations"),
        ("GET", "/v1beta/tunedModels/m-1"),
        ("POST", "/v1/tunedModels/m-1/operations/op-1:cancel"),
        ("DELETE", "/v1beta/tunedModels/m-1"),
        ("POST", "/v1beta/tunedModels/m-1:generateContent"),
        ("GET", "/v1beta/tunedModels?pageSize=5&filter=owner:me"),
    ]
    assert json.loads(scripted.seen[3].body) == {}
    assert json.loads(scripted.seen[5].body) == {"contents": [{"parts": [{"text": "I"}]}]}


async def test_html_502_page_is_retried(scripted: ScriptedServer) -> None:
    page = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body><center>nginx</center></body>\n</html>"
    scripted.script(Reply(status=502, body=page, content_type="text/html"), Reply.json(MODEL))
    observer = RecordingObserver()
    with capture_logs() as logs:
        async with client_for(scripted.base_url, observer) as client:
            model = await client.get_tuned_model("tunedModels/m-1")
    assert model.name == "tunedModels/m-1"
    [retry] = retries_in(logs)
    assert retry["method"] == "GET"
    assert retry["route"] == "tunedModels.get"
    assert retry["status"] == "502"
    assert retry["attempt"] == 1
    assert retry["log_level"] == "warning"
    assert observer.finished == [("tunedModels.get", "502"), ("tunedModels.get", "200")]
    assert [(route, status) for route, status, _ in observer.retries] == [("tunedModels.get", "502")]


@pytest.mark.parametrize(
    "body",
    [
        "<html><body>Service temporarily unavailable</body></html>",
        '{"name": "tunedModels/m-1", "state": "ACT',  # cut short, with a Content-Length that matches
        b"\xff\xfe not utf-8",
        '{"name": "tunedModels/m-1"}',  # no state
    ],
    ids=["html", "truncated-json", "binary", "missing-field"],
)
async def test_malformed_success_bodies_are_retried_then_raised(scripted: ScriptedServer, body: str | bytes) -> None:
    scripted.script(Reply(status=200, body=body))
    observer = RecordingObserver()
    with capture_logs() as logs:
        async with client_for(scripted.base_url, observer) as client:
            with pytest.raises(MalformedResponse) as raised:
                await client.get_tuned_model("tunedModels/m-1")
    assert len(scripted.seen) == FAST.max_retries + 1
    assert raised.value.http_status == 200
    assert str(raised.value).startswith("MALFORMED_RESPONSE (200): ")
    assert [entry["status"] for entry in retries_in(logs)] == ["malformed"] * FAST.max_retries
    assert {status for _, status in observer.finished} == {"malformed"}


@pytest.mark.parametrize("method", ["delete", "cancel"])
async def test_a_success_status_carrying_an_error_is_not_taken_as_done(scripted: ScriptedServer, method: str) -> None:
    error = {"error": {"code": 500, "message": "the model was not deleted", "status": "INTERNAL"}}
    scripted.script(*[Reply.json(error)] * (FAST.max_retries + 1))
    async with client_for(scripted.base_url) as client:
        call = (
            client.delete_tuned_model("tunedModels/m-1")
            if method == "delete"
            else client.cancel_operation("tunedModels/m-1/operations/op-1")
        )
        with pytest.raises(MalformedResponse) as raised:
            await call
    assert "INTERNAL" in str(raised.value)
    assert len(scripted.seen) == FAST.max_retries + 1


async def test_malformed_then_good_succeeds(scripted: ScriptedServer) -> None:
    scripted.script(Reply(body="not json"), Reply.json(MODEL))
    async with client_for(scripted.base_url) as client:
        assert (await client.get_tuned_model("tunedModels/m-1")).display_name == "m"


async def test_retry_after_header_alone_is_honoured(scripted: ScriptedServer) -> None:
    scripted.script(
        Reply(status=503, body="busy", content_type="text/plain", headers={"Retry-After": "1"}), Reply.json(MODEL)
    )
    observer = RecordingObserver()
    started = time.monotonic()
    async with client_for(scripted.base_url, observer, retry=RetryPolicy(3, 0.01, 0.5)) as client:
        await client.get_tuned_model("tunedModels/m-1")
    assert time.monotonic() - started >= 1.0
    [(_, status, delay)] = observer.retries
    assert status == "503"
    assert 1.0 <= delay <= 1.1


async def test_invalid_argument_is_not_retried(scripted: ScriptedServer) -> None:
    scripted.script(Reply.google_error(400, "INVALID_ARGUMENT", "displayName is too long."))
    with capture_logs() as logs:
        async with client_for(scripted.base_url) as client:
            with pytest.raises(InvalidArgument) as raised:
                await client.create_tuned_model(REQUEST)
    assert str(raised.value) == "INVALID_ARGUMENT (400): displayName is too long."
    assert len(scripted.seen) == 1
    assert retries_in(logs) == []


@pytest.mark.parametrize(
    ("http", "status", "expected"),
    [
        (404, "NOT_FOUND", NotFound),
        (409, "ALREADY_EXISTS", AlreadyExists),
        (403, "PERMISSION_DENIED", PermissionDenied),
    ],
)
async def test_permanent_errors_are_typed(
    scripted: ScriptedServer, http: int, status: str, expected: type[PermanentError]
) -> None:
    scripted.script(Reply.google_error(http, status, "no"))
    async with client_for(scripted.base_url) as client:
        with pytest.raises(expected):
            await client.create_tuned_model(REQUEST)
    assert len(scripted.seen) == 1


async def test_an_echoed_key_is_redacted(scripted: ScriptedServer) -> None:
    scripted.script(Reply.google_error(401, "UNAUTHENTICATED", f"API key {API_KEY} not valid."))
    async with client_for(scripted.base_url) as client:
        with pytest.raises(PermissionDenied) as raised:
            await client.get_tuned_model("tunedModels/m-1")
    assert str(raised.value) == "UNAUTHENTICATED (401): API key [redacted] not valid."
    assert_no_key(raised.value, repr(raised.value), raised.value.args)


async def test_exhausted_retries_raise_the_last_transient_error(scripted: ScriptedServer) -> None:
    scripted.script(
        Reply.google_error(429, "RESOURCE_EXHAUSTED", "quota"),
        Reply.google_error(500, "INTERNAL", "oops"),
        Reply.google_error(503, "UNAVAILABLE", "The model is overloaded."),
    )
    with capture_logs() as logs:
        async with client_for(scripted.base_url, retry=RetryPolicy(2, 0.01, 0.02)) as client:
            with pytest.raises(TransientError) as raised:
                await client.get_operation("tunedModels/m-1/operations/op-1")
    assert str(raised.value) == "UNAVAILABLE (503): The model is overloaded."
    assert [(e["status"], e["attempt"]) for e in retries_in(logs)] == [("429", 1), ("500", 2)]
    assert_no_key(logs, raised.value)


async def test_connection_refused(unused_tcp_port: int) -> None:
    observer = RecordingObserver()
    async with client_for(f"http://127.0.0.1:{unused_tcp_port}", observer, retry=RetryPolicy(1, 0.01, 0.01)) as client:
        with pytest.raises(ConnectionFailed) as raised:
            await client.get_tuned_model("tunedModels/m-1")
    assert raised.value.label == "connection_error"
    assert observer.finished == [("tunedModels.get", "connection_error")] * 2
    assert_no_key(raised.value)


async def drop_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


async def short_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"name": ')
    await writer.drain()
    writer.close()


@pytest.mark.parametrize("handler", [drop_after_request, short_body], ids=["dropped", "short-body"])
async def test_broken_connections_are_retried(
    raw_server: Callable[[RawHandler], Awaitable[str]], handler: RawHandler
) -> None:
    base_url = await raw_server(handler)
    with capture_logs() as logs:
        async with client_for(base_url, retry=RetryPolicy(2, 0.01, 0.01)) as client:
            with pytest.raises(ConnectionFailed):
                await client.get_tuned_model("tunedModels/m-1")
    assert [e["status"] for e in retries_in(logs)] == ["connection_error"] * 2


async def test_timeout(scripted: ScriptedServer) -> None:
    scripted.script(Reply(hang=True))
    observer = RecordingObserver()
    async with client_for(scripted.base_url, observer, retry=RetryPolicy(1, 0.01, 0.01), request_timeout=0.2) as client:
        with pytest.raises(RequestTimeout) as raised:
            await client.get_tuned_model("tunedModels/m-1")
    assert str(raised.value).startswith("DEADLINE_EXCEEDED (timeout): ")
    assert observer.finished == [("tunedModels.get", "timeout")] * 2


async def test_redirects_are_not_followed(scripted: ScriptedServer) -> None:
    elsewhere = ScriptedServer()
    await elsewhere.start()
    try:
        elsewhere.script(Reply.json(MODEL))
        scripted.script(
            Reply(status=302, body="", headers={"Location": f"{elsewhere.base_url}/v1beta/tunedModels/m-1"})
        )
        async with client_for(scripted.base_url) as client:
            with pytest.raises(PermanentError) as raised:
                await client.get_tuned_model("tunedModels/m-1")
        assert raised.value.http_status == 302
        assert elsewhere.seen == []
    finally:
        await elsewhere.stop()


async def test_all_pages_are_followed(scripted: ScriptedServer) -> None:
    def model(index: int) -> dict[str, str]:
        return {**MODEL, "name": f"tunedModels/m-{index}"}

    scripted.script(
        Reply.json({"tunedModels": [model(1), model(2)], "nextPageToken": "p2"}),
        Reply.json({"tunedModels": [model(3)], "nextPageToken": "p3"}),
        Reply.json({}),
    )
    async with client_for(scripted.base_url) as client:
        names = [m.name async for m in client.list_tuned_models(page_size=2)]
    assert names == ["tunedModels/m-1", "tunedModels/m-2", "tunedModels/m-3"]
    assert [s.path_qs for s in scripted.seen] == [
        "/v1beta/tunedModels?pageSize=2",
        "/v1beta/tunedModels?pageSize=2&pageToken=p2",
        "/v1beta/tunedModels?pageSize=2&pageToken=p3",
    ]


async def test_operation_pages_are_followed(scripted: ScriptedServer) -> None:
    second = {**OPERATION, "name": "tunedModels/m-1/operations/op-2"}
    scripted.script(Reply.json({"operations": [OPERATION], "nextPageToken": "t"}), Reply.json({"operations": [second]}))
    async with client_for(scripted.base_url) as client:
        operations = await client.find_operations("tunedModels/m-1")
    assert [op.name for op in operations] == [OPERATION["name"], second["name"]]
    assert scripted.seen[1].path_qs == "/v1/tunedModels/m-1/operations?pageToken=t"


async def test_a_listing_that_does_not_advance_stops(scripted: ScriptedServer) -> None:
    scripted.script(Reply.json({"tunedModels": [MODEL], "nextPageToken": "same"}))
    async with client_for(scripted.base_url) as client:
        with pytest.raises(MalformedResponse, match="page token repeated"):
            async for _ in client.list_tuned_models():
                pass


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("get_tuned_model", "tunedModels/../v1/secrets"),
        ("get_tuned_model", "tunedModels/x?key=1"),
        ("get_operation", "tunedModels/x"),
        ("delete_tuned_model", "models/gemini"),
        ("find_operations", ""),
    ],
)
async def test_names_outside_the_documented_shapes_are_refused(
    scripted: ScriptedServer, method: str, name: str
) -> None:
    async with client_for(scripted.base_url) as client:
        with pytest.raises(ValueError, match="resource name"):
            await getattr(client, method)(name)
    assert scripted.seen == []


async def test_page_size_bounds(scripted: ScriptedServer) -> None:
    async with client_for(scripted.base_url) as client:
        with pytest.raises(ValueError, match="page_size"):
            async for _ in client.list_tuned_models(page_size=1001):
                pass


async def test_use_outside_async_with_is_an_error() -> None:
    client = client_for("http://127.0.0.1:1")
    with pytest.raises(RuntimeError, match="async with"):
        await client.get_tuned_model("tunedModels/m-1")


def test_errors_share_one_base() -> None:
    assert issubclass(TransientError, ServiceError)
    assert issubclass(PermanentError, ServiceError)


async def test_a_key_echoed_in_a_garbled_success_body_is_redacted(scripted: ScriptedServer) -> None:
    scripted.script(Reply(body=f"oops {API_KEY} oops"))
    with capture_logs() as logs:
        async with client_for(scripted.base_url, retry=RetryPolicy(1, 0.01, 0.01)) as client:
            with pytest.raises(MalformedResponse) as raised:
                await client.get_tuned_model("tunedModels/m-1")
    assert "[redacted]" in str(raised.value)
    assert_no_key(raised.value, logs)


async def test_a_response_larger_than_the_limit_is_refused_unread(scripted: ScriptedServer) -> None:
    scripted.script(Reply(body=b'{"name": "' + b"x" * MAX_RESPONSE_BYTES + b'"}'))  # announced by Content-Length
    observer = RecordingObserver()
    async with client_for(scripted.base_url, observer) as client:
        with pytest.raises(ResponseTooLarge) as raised:
            await client.get_tuned_model("tunedModels/m-1")
    assert isinstance(raised.value, PermanentError)  # the same request would bring the same flood: no retry
    assert (
        str(raised.value) == f"RESPONSE_TOO_LARGE (200): response body larger than {MAX_RESPONSE_BYTES} bytes: not read"
    )
    assert observer.finished == [("tunedModels.get", "too_large")]


async def endless_chunks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A 200 whose chunked body never ends (until the client goes away)."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * (1 << 20)
    try:
        for _ in range(4 * MAX_RESPONSE_BYTES // len(chunk)):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
    except ConnectionError:
        return
    finally:
        writer.close()


async def test_an_endless_response_is_read_no_further_than_the_limit(
    raw_server: Callable[[RawHandler], Awaitable[str]],
) -> None:
    base_url = await raw_server(endless_chunks)
    async with client_for(base_url) as client:
        with pytest.raises(ResponseTooLarge):
            await client.get_tuned_model("tunedModels/m-1")
