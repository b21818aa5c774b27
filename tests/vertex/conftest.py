"""Fixtures: a real emulator on 127.0.0.1 with a bucket and a service-account key file pointing at its token
endpoint, the client's own token source over that key, and a VertexClient with quick retries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tunekeeper.backends.googleapi.retry import RetryPolicy
from tunekeeper.backends.googleapi.tokens import TokenSource
from tunekeeper.backends.vertex.auth import GoogleTokens
from tunekeeper.backends.vertex.client import VertexClient
from tunekeeper.emulator import Emulator, EmulatorConfig

PROJECT = "tk-project"
LOCATION = "us-central1"
BUCKET = "tk-data"
TRAIN_URI = f"gs://{BUCKET}/runs/1/train.jsonl"
QUICK_RETRIES = RetryPolicy(max_retries=8, base_delay=0.01, max_delay=0.05)


def example_line(number: int) -> str:
    return json.dumps(
        {
            "contents": [
                {"role": "user", "parts": [{"text": f"question {number}"}]},
                {"role": "model", "parts": [{"text": f"answer {number}"}]},
            ]
        }
    )


def dataset(examples: int = 16) -> bytes:
    return ("\n".join(example_line(number) for number in range(examples)) + "\n").encode()


def emulator_config(**overrides: Any) -> EmulatorConfig:
    settings: dict[str, Any] = {
        "step_seconds": 0.01,
        "log_requests": False,
        "seed": 3,
        "buckets": frozenset({BUCKET}),
    }
    settings.update(overrides)
    return EmulatorConfig(**settings)


@dataclass
class RecordingObserver:
    """Keeps what the transport reports, to see which failures were met and retried."""

    finished: list[tuple[str, str]] = field(default_factory=list)
    retries: list[tuple[str, str, float]] = field(default_factory=list)

    def request_finished(self, route: str, status: str, seconds: float) -> None:
        self.finished.append((route, status))

    def retry_scheduled(self, route: str, status: str, delay: float) -> None:
        self.retries.append((route, status, delay))


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(emulator_config()) as emu:
        yield emu


@pytest.fixture
def key_file(emulator: Emulator, tmp_path: Path) -> Path:
    return emulator.write_service_account_file(tmp_path / "key.json", project=PROJECT)


@pytest.fixture
async def tokens(key_file: Path) -> AsyncIterator[GoogleTokens]:
    async with GoogleTokens(key_file=key_file) as source:
        yield source


@pytest.fixture
def observer() -> RecordingObserver:
    return RecordingObserver()


ClientFactory = Callable[..., AbstractAsyncContextManager[VertexClient]]


@pytest.fixture
def make_client(emulator: Emulator, tokens: GoogleTokens, observer: RecordingObserver) -> ClientFactory:
    """`async with make_client(api_version="v1") as client:` a client of the emulator (keywords override)."""

    @asynccontextmanager
    async def make(tokens_source: TokenSource | None = None, **overrides: Any) -> AsyncIterator[VertexClient]:
        settings: dict[str, Any] = {
            "project": PROJECT,
            "location": LOCATION,
            "base_url": emulator.base_url,
            "storage_url": emulator.base_url,
            "tokens": tokens_source or tokens,
            "retry": QUICK_RETRIES,
            "observer": observer,
        }
        settings.update(overrides)
        async with VertexClient(**settings) as client:
            yield client

    return make


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[VertexClient]:
    async with make_client() as vertex:
        yield vertex


@pytest.fixture
async def training_data(client: VertexClient) -> str:
    """The URI of 16 training examples, uploaded through the client."""
    await client.storage.upload(TRAIN_URI, dataset(16), "application/jsonl")
    return TRAIN_URI
