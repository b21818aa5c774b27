"""Fixtures for the daemon with `backend = "vertex"` against the emulator: a Cloud Storage bucket for staging, a
service-account key file whose token_uri is the emulator's token endpoint, and the daemon's settings, either as
TUNEKEEPER_* variables for a `tunekeeper run` subprocess or as a Settings for a Service on the test's loop.

- `vertex_emulator`: a quiet emulator with the staging bucket; `make_emulator(**config)` for one configured
  otherwise (token lifetime, quota mode, faults, latency), as `async with make_emulator(...) as emu:`.
- `key_file_for(emu)`: the key file of the test's project for that emulator, in the test's tmp_path.
- `vertex_environment(database_url, emu, key_file, extra)` and `vertex_settings(...)`: the same settings twice.
- `store`: a JobStore on the test's database (`database_url`: SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.harness import daemon_environment
from tests.waiting import wait_until
from tunekeeper.config import Settings
from tunekeeper.daemon.notify import SystemdNotifier
from tunekeeper.daemon.service import Service
from tunekeeper.db.engine import make_engine
from tunekeeper.db.records import Job
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator, EmulatorConfig

PROJECT = "tk-proof-project"
LOCATION = "us-central1"
BUCKET = "tk-staging"
STAGING_URI = f"gs://{BUCKET}/tunekeeper"

# Quick retries and a create rate that never holds a test back; the daemon's own timings come from the harness.
VERTEX_FAST: dict[str, str] = {
    "max_active_jobs": "8",
    "creates_per_minute": "6000",
    "requests_per_minute": "600000",
    "max_concurrent_creates": "4",
    "max_retries": "8",
    "retry_base_delay": "0.01",
    "retry_max_delay": "0.2",
    "request_timeout": "10",
}


def pairs(count: int = 10) -> list[dict[str, str]]:
    """`count` training pairs, n -> n + 1: the emulator's endpoint answers each input with its output."""
    return [{"text_input": str(n), "output": str(n + 1)} for n in range(count)]


def emulator_config(**overrides: Any) -> EmulatorConfig:
    settings: dict[str, Any] = {
        "step_seconds": 0.01,
        "log_requests": False,
        "seed": 5,
        "buckets": frozenset({BUCKET}),
    }
    settings.update(overrides)
    return EmulatorConfig(**settings)


EmulatorFactory = Callable[..., AbstractAsyncContextManager[Emulator]]


@pytest.fixture
def make_emulator() -> EmulatorFactory:
    """`async with make_emulator(token_lifetime=1) as emu:` an emulator with the staging bucket (keywords override)."""

    @contextlib.asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[Emulator]:
        async with Emulator(emulator_config(**overrides)) as emu:
            yield emu

    return make


@pytest.fixture
async def vertex_emulator(make_emulator: EmulatorFactory) -> AsyncIterator[Emulator]:
    async with make_emulator() as emu:
        yield emu


@pytest.fixture
def key_file_for(tmp_path: Path) -> Callable[[Emulator], Path]:
    def write(emu: Emulator) -> Path:
        return emu.write_service_account_file(tmp_path / "vertex-key.json", project=PROJECT)

    return write


@pytest.fixture
def key_file(vertex_emulator: Emulator, key_file_for: Callable[[Emulator], Path]) -> Path:
    return key_file_for(vertex_emulator)


def vertex_values(emu: Emulator, key_file: Path, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The [vertex] section for `emu`, as the text an environment variable holds."""
    return {
        "project": PROJECT,
        "location": LOCATION,
        "base_url": emu.base_url,
        "storage_url": emu.base_url,
        "credentials_file": str(key_file),
        "staging_uri": STAGING_URI,
        **VERTEX_FAST,
        **(overrides or {}),
    }


def vertex_environment(
    database_url: str,
    emu: Emulator,
    key_file: Path,
    vertex: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A `tunekeeper run` environment choosing the vertex backend; `vertex` overrides [vertex] keys."""
    section = {
        f"TUNEKEEPER_VERTEX__{key.upper()}": value for key, value in vertex_values(emu, key_file, vertex).items()
    }
    return daemon_environment(database_url, emu.base_url, {"TUNEKEEPER_BACKEND": "vertex", **section, **(extra or {})})


def vertex_settings(
    database_url: str, emu: Emulator, key_file: Path, vertex: Mapping[str, str] | None = None, **sections: Any
) -> Settings:
    """The harness's fast timings as a Settings, for a daemon run in-process; keywords replace whole sections."""
    values: dict[str, Any] = {
        "backend": "vertex",
        "database": {"url": database_url},
        "vertex": vertex_values(emu, key_file, vertex),
        "daemon": {
            "idle_interval": 0.1,
            "lease_seconds": 3,
            "retry_base_delay": 0.05,
            "retry_max_delay": 0.5,
            "shutdown_grace": 5,
        },
        "poll": {"min_interval": 0.05, "max_interval": 0.3, "min_step_seconds": 0},
        "purge": {"enabled": False},
        "http": {"enabled": False},
    }
    values.update(sections)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[Service]:
    """The daemon on this event loop; on the way out it is stopped as SIGTERM would, and must exit 0."""
    service = Service(settings, notifier=SystemdNotifier(None))
    task = asyncio.create_task(service.run(), name="service")
    try:
        await wait_until(lambda: service.started.is_set() or task.done(), within=15, message="the service to start")
        if task.done():
            raise AssertionError(f"the service exited at start-up with status {task.result()}")
        yield service
    finally:
        service.stop()
        async with asyncio.timeout(30):
            status = await task
    assert status == 0


def tuning_creates(emu: Emulator, job_id: int) -> dict[str, int]:
    """The emulator's count of creates attempted and accepted for one job (its `tunekeeper-job` label)."""
    by_label: dict[str, dict[str, int]] = emu.stats()["tuning_creates"]["by_label"]
    return by_label.get(f"tunekeeper-job={job_id}", {"attempted": 0, "accepted": 0})


async def job_of(store: JobStore, job_id: int) -> Job:
    job = await store.get_job(job_id)
    assert job is not None, f"job {job_id} is gone"
    return job


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    engine = make_engine(database_url)
    yield JobStore(engine)
    await engine.dispose()
