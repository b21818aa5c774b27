"""Fixtures: an emulator on 127.0.0.1 (tiny steps, no faults) and an aiohttp session that talks to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.waiting import wait_until
from tunekeeper.emulator import Emulator, EmulatorConfig
from tunekeeper.tutorial import NUMBER_PAIRS

API_KEY = "emulator-test-key"
KEY_HEADERS = {"x-goog-api-key": API_KEY}
BASE_MODEL = "models/gemini-1.5-flash-001-tuning"

TUTORIAL_PAIRS = list(NUMBER_PAIRS)


def tutorial_body() -> bytes:
    """The tutorial's create body as its curl command sends it: snake_case keys and trailing commas."""
    examples = ", ".join(f'{{"text_input": "{text}", "output": "{output}",}}' for text, output in TUTORIAL_PAIRS)
    return (
        '{"display_name": "number generator model", "base_model": "models/gemini-1.5-flash-001-tuning", '
        '"tuning_task": {"hyperparameters": {"batch_size": 2, "learning_rate": 0.001, "epoch_count":5,}, '
        f'"training_data": {{"examples": {{"examples": [{examples}]}}}}}}}}'
    ).encode()


def model_body(display_name: str = "test model", examples: int = 4, **extra: Any) -> dict[str, Any]:
    """A small valid create body (camelCase)."""
    body: dict[str, Any] = {
        "displayName": display_name,
        "baseModel": BASE_MODEL,
        "tuningTask": {
            "hyperparameters": {"epochCount": 1, "batchSize": 2, "learningRate": 0.001},
            "trainingData": {
                "examples": {"examples": [{"textInput": f"in {i}", "output": f"out {i}"} for i in range(examples)]}
            },
        },
    }
    body.update(extra)
    return body


def make_config(**overrides: Any) -> EmulatorConfig:
    settings: dict[str, Any] = {"step_seconds": 0.005, "log_requests": False, "seed": 7}
    settings.update(overrides)
    return EmulatorConfig(**settings)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(make_config()) as emu:
        yield emu


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=KEY_HEADERS) as client:
        yield client


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: dict[str, Any] | bytes | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """One request; the status and the decoded JSON answer."""
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"} if data is not None else {}
    headers.update(kwargs.pop("headers", {}))
    async with session.request(method, url, data=data, headers=headers, **kwargs) as response:
        return response.status, await response.json()


async def create(
    session: aiohttp.ClientSession, emu: Emulator, body: dict[str, Any], model_id: str | None = None
) -> dict[str, Any]:
    """Create a model; the operation. Fails the test unless the create succeeds."""
    params = {"tunedModelId": model_id} if model_id else {}
    status, operation = await call(session, "POST", f"{emu.base_url}/v1beta/tunedModels", body, params=params)
    assert status == 200, operation
    return dict(operation)


async def wait_done(session: aiohttp.ClientSession, emu: Emulator, operation_name: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        status, operation = await call(session, "GET", f"{emu.base_url}/v1/{operation_name}")
        assert status == 200, operation
        return dict(operation) if operation.get("done") else None

    return await wait_until(done, within=10.0, message=f"{operation_name} done")


async def ok(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: dict[str, Any] | bytes | None = None,
    **kwargs: Any,
) -> Any:
    """One request that must succeed; its JSON answer."""
    status, answer = await call(session, method, url, body, **kwargs)
    assert status == 200, answer
    return answer
