"""google-genai, unchanged, in Vertex AI mode against the emulator: a tuned endpoint answers generate_content
(sync and async) and generate_content_stream with the nearest training example's output."""

from __future__ import annotations

import asyncio
import time

import google.oauth2.credentials
import pytest
from google import genai
from google.genai import errors
from google.genai.types import HttpOptions

from tunekeeper.emulator import Emulator
from tunekeeper.emulator.oauth.tokens import CLOUD_PLATFORM_SCOPE

PROJECT = "p"
LOCATION = "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
EXAMPLES = (("1", "2"), ("3", "4"), ("hello there", "general kenobi"))


def deploy(emulator: Emulator) -> str:
    """A tuned model deployed to a new endpoint; the endpoint's full name."""
    _, endpoint = emulator.state.deployments.deploy(
        PARENT, "numbers", "gemini-2.5-flash", EXAMPLES, {"k": "v"}, f"{PARENT}/tuningJobs/1", time.time()
    )
    return endpoint.name


def client_for(emulator: Emulator, token: str | None = None) -> genai.Client:
    if token is None:
        token = emulator.state.tokens.issue("sa@example", frozenset({CLOUD_PLATFORM_SCOPE}), time.time()).access_token
    return genai.Client(
        vertexai=True,
        project=PROJECT,
        location=LOCATION,
        credentials=google.oauth2.credentials.Credentials(token),
        http_options=HttpOptions(base_url=emulator.base_url),
    )


async def test_generate_content_sync(emulator: Emulator) -> None:
    endpoint = deploy(emulator)
    client = client_for(emulator)
    response = await asyncio.to_thread(client.models.generate_content, model=endpoint, contents="1")
    assert response.text == "2"
    assert response.model_version == "gemini-2.5-flash"
    assert response.response_id
    assert response.create_time is not None
    assert response.usage_metadata is not None
    assert response.usage_metadata.traffic_type == "ON_DEMAND"
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == "STOP"


async def test_generate_content_async(emulator: Emulator) -> None:
    endpoint = deploy(emulator)
    response = await client_for(emulator).aio.models.generate_content(model=endpoint, contents="hello")
    assert response.text == "general kenobi"


async def test_generate_content_stream(emulator: Emulator) -> None:
    endpoint = deploy(emulator)
    client = client_for(emulator)

    def stream() -> list[str]:
        return [chunk.text or "" for chunk in client.models.generate_content_stream(model=endpoint, contents="hello")]

    texts = await asyncio.to_thread(stream)
    assert texts == ["general", " kenobi"]  # cut in two at the middle


async def test_generate_content_stream_async(emulator: Emulator) -> None:
    endpoint = deploy(emulator)
    chunks = [
        chunk
        async for chunk in await client_for(emulator).aio.models.generate_content_stream(model=endpoint, contents="3")
    ]
    assert [chunk.text for chunk in chunks] == ["4"]
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.total_token_count == 2


async def test_an_unknown_token_is_refused(emulator: Emulator) -> None:
    endpoint = deploy(emulator)
    client = client_for(emulator, token="ya29.not-issued")
    with pytest.raises(errors.ClientError) as raised:
        await client.aio.models.generate_content(model=endpoint, contents="1")
    assert raised.value.code == 401
    assert raised.value.status == "UNAUTHENTICATED"


async def test_an_undeployed_endpoint_is_a_failed_precondition(emulator: Emulator) -> None:
    endpoint = deploy(emulator)
    deployments = emulator.state.deployments
    deployments.undeploy(endpoint, deployments.endpoint(endpoint).deployed_model_id or "", time.time())
    with pytest.raises(errors.ClientError) as raised:
        await client_for(emulator).aio.models.generate_content(model=endpoint, contents="1")
    assert raised.value.code == 400
    assert raised.value.status == "FAILED_PRECONDITION"
