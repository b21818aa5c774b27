"""The private key and the access tokens never show: not in log lines (structlog's or the standard library's),
not in error texts or reprs, not even when a server echoes the Authorization header back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from tests.vertex.conftest import BUCKET, LOCATION, PROJECT, ClientFactory
from tests.vertex.test_tuning_jobs import spec, until_ended
from tunekeeper.backends.googleapi.errors import ServiceError
from tunekeeper.backends.googleapi.retry import RetryPolicy
from tunekeeper.backends.vertex.auth import GoogleTokens
from tunekeeper.backends.vertex.client import VertexClient
from tunekeeper.emulator import Emulator

JOB = f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs/1"


@dataclass
class RecordingTokens:
    """Passes every authorization through, keeping the tokens handed out."""

    inner: GoogleTokens
    seen: set[str] = field(default_factory=set)

    async def authorization(self) -> str:
        value = await self.inner.authorization()
        self.seen.add(value.partition(" ")[2])
        return value

    def invalidate(self) -> None:
        self.inner.invalidate()


def pem_body(key_file: Path, emulator: Emulator) -> list[str]:
    """The base64 lines of the private key: any of them in a text would be a leak."""
    key = emulator.service_account_info(PROJECT)["private_key"]
    return [line for line in key.splitlines() if line and not line.startswith("-----")]


async def test_a_whole_session_leaks_neither_key_nor_token(
    make_client: ClientFactory,
    tokens: GoogleTokens,
    key_file: Path,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recording = RecordingTokens(tokens)
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        async with make_client(tokens_source=recording) as client:
            texts += [repr(client), repr(tokens), str(tokens)]
            await client.storage.upload(f"gs://{BUCKET}/t.jsonl", b"\n".join([b'{"contents": []}'] * 3))
            emulator.state.tokens.reset()  # a 401, then a second token
            emulator.set_faults({"503": 0.3, "429": 0.2})
            for _ in range(5):
                try:
                    await client.get_tuning_job(JOB)
                except ServiceError as error:
                    texts += [str(error), repr(error), *map(str, error.args)]
            emulator.set_faults({}, replace=True)
            try:
                await client.create_tuning_job(spec(f"gs://{BUCKET}/t.jsonl"))
            except ServiceError as error:
                texts += [str(error), repr(error)]

    assert len(recording.seen) == 2
    assert {"api_token_refused", "api_retry"} <= {entry["event"] for entry in logs}  # the risky lines were made
    haystack = "\n".join([*texts, *map(repr, logs), caplog.text])
    for secret in [*recording.seen, *pem_body(key_file, emulator)]:
        assert secret not in haystack


@pytest.fixture
async def echo_server() -> AsyncIterator[str]:
    """Answers errors that quote the request's Authorization header: in Google's JSON, and as a proxy's page."""
    calls = {"n": 0}

    async def handle(request: web.Request) -> web.Response:
        calls["n"] += 1
        echoed = request.headers.get("Authorization", "")
        if request.path.endswith("/1"):
            return web.json_response(
                {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": f"bad header {echoed}"}},
                status=400,
            )
        return web.Response(status=502, text=f"<html>upstream said: {echoed}</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def test_a_token_echoed_by_the_server_is_redacted(echo_server: str, tokens: GoogleTokens) -> None:
    recording = RecordingTokens(tokens)
    client = VertexClient(
        project=PROJECT,
        location=LOCATION,
        base_url=echo_server,
        tokens=recording,
        retry=RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.01),
    )
    async with client:
        with pytest.raises(ServiceError) as json_error:
            await client.get_tuning_job(JOB)
        with capture_logs() as logs, pytest.raises(ServiceError) as page_error:
            await client.get_tuning_job(JOB.replace("/1", "/2"))

    (token,) = recording.seen
    assert str(json_error.value) == "INVALID_ARGUMENT (400): bad header Bearer [redacted]"
    assert "[redacted]" in str(page_error.value)
    assert token not in str(page_error.value)
    assert any(entry["event"] == "api_retry" for entry in logs)
    assert token not in repr(logs)


async def test_a_succeeded_job_and_its_repr_show_no_token(
    client: VertexClient, training_data: str, tokens: GoogleTokens
) -> None:
    token = (await tokens.authorization()).partition(" ")[2]
    job = await until_ended(client, (await client.create_tuning_job(spec(training_data))).name)
    assert token not in repr(job)
    assert token not in repr(client)
