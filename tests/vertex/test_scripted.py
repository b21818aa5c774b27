"""Answers the emulator never gives, from a scripted server on 127.0.0.1: operations that take time or fail,
a listing whose page token does not advance, an upload whose answer does not match the data."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from tests.vertex.conftest import LOCATION, PROJECT
from tunekeeper.backends.googleapi.errors import MalformedResponse
from tunekeeper.backends.googleapi.retry import RetryPolicy
from tunekeeper.backends.vertex.client import OperationFailed, VertexClient

PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
ENDPOINT = f"{PARENT}/endpoints/77"
OPERATION = f"{PARENT}/operations/5"


@dataclass
class Script:
    """Answers each request with the next document (the last repeats); records the paths asked for."""

    answers: list[object] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    base_url: str = ""


@dataclass
class StaticTokens:
    async def authorization(self) -> str:
        return "Bearer test-token"

    def invalidate(self) -> None:
        raise AssertionError("no 401 is scripted")


@pytest.fixture
async def script() -> AsyncIterator[Script]:
    state = Script()

    async def handle(request: web.Request) -> web.Response:
        state.paths.append(f"{request.method} {request.path}")
        answer = state.answers.pop(0) if len(state.answers) > 1 else state.answers[0]
        return web.Response(text=json.dumps(answer), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    state.base_url = f"http://{host}:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


def client_of(script: Script, operation_timeout: float = 5.0) -> VertexClient:
    return VertexClient(
        project=PROJECT,
        location=LOCATION,
        base_url=script.base_url,
        storage_url=script.base_url,
        tokens=StaticTokens(),
        retry=RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.01),
        operation_timeout=operation_timeout,
    )


async def test_an_unfinished_operation_is_polled_until_done(script: Script) -> None:
    script.answers = [{"name": OPERATION}, {"name": OPERATION, "done": False}, {"name": OPERATION, "done": True}]
    async with client_of(script) as client:
        operation = await client.delete_endpoint(ENDPOINT)
    assert operation.done
    assert script.paths == [f"DELETE /v1beta1/{ENDPOINT}", *[f"GET /v1beta1/{OPERATION}"] * 2]


async def test_an_operation_still_running_at_the_deadline_is_returned_as_it_is(script: Script) -> None:
    script.answers = [{"name": OPERATION}]
    async with client_of(script, operation_timeout=0.1) as client:
        operation = await client.delete_endpoint(ENDPOINT)
    assert not operation.done
    assert len(script.paths) == 2  # the delete and one poll at the deadline


async def test_a_failed_operation_raises_with_its_status(script: Script) -> None:
    script.answers = [{"name": OPERATION, "done": True, "error": {"code": 9, "message": "still deployed"}}]
    async with client_of(script) as client:
        with pytest.raises(OperationFailed) as raised:
            await client.delete_model(f"{PARENT}/models/12@1")
    assert raised.value.status == "FAILED_PRECONDITION"
    assert "still deployed" in raised.value.message


async def test_a_page_token_that_does_not_advance_ends_the_listing(script: Script) -> None:
    script.answers = [
        {"tuningJobs": [{"name": f"{PARENT}/tuningJobs/1", "state": "JOB_STATE_RUNNING"}], "nextPageToken": "same"}
    ]
    async with client_of(script) as client:
        with pytest.raises(MalformedResponse, match="page token repeated"):
            _ = [job async for job in client.list_tuning_jobs()]
    assert len(script.paths) == 2


async def test_an_upload_answer_that_does_not_match_the_data_is_retried_then_malformed(script: Script) -> None:
    script.answers = [
        {"bucket": "bkt", "name": "o", "size": "3", "generation": "1", "md5Hash": "AAAAAAAAAAAAAAAAAAAAAA=="}
    ]
    async with client_of(script) as client:
        with pytest.raises(MalformedResponse, match="MD5"):
            await client.storage.upload("gs://bkt/o", b"abc")
    assert len(script.paths) == 3  # the first attempt and two retries
