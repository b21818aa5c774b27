"""What the Vertex AI daemon tests (cancel, purge, poll, replicas) share: an emulator with a staging bucket and a
service-account key, settings and daemon environments for `backend = "vertex"`, worker passes, and looks at what
the service holds.

Fixtures live here rather than in a conftest.py: test modules import them explicitly
(`from tests.vertex_daemon.support import vx_emulator, vx_key_file`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness import daemon_environment
from tests.waiting import wait_until
from tunekeeper.backends.googleapi.errors import NotFound
from tunekeeper.backends.vertex.adapter import VertexBackend
from tunekeeper.backends.vertex.client import VertexClient
from tunekeeper.config import Settings
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.dispatcher import Dispatcher
from tunekeeper.daemon.poller import Poller
from tunekeeper.daemon.worker import JobWorker
from tunekeeper.db.records import Job, JobEvent, NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.db.tables import tuning_jobs
from tunekeeper.emulator import Emulator, EmulatorConfig
from tunekeeper.states import State

PROJECT = "tk-vertex-proof"
LOCATION = "us-central1"
BUCKET = "tk-stage"
STAGING_URI = f"gs://{BUCKET}/tunekeeper"
# 16 pairs: with the emulator's batch of 8, 2 tuning steps per epoch.
PAIRS = [{"text_input": str(n), "output": str(n + 1)} for n in range(16)]
MODEL_NAME = re.compile(rf"projects/{PROJECT}/locations/{LOCATION}/models/\d+@1")
ENDPOINT_NAME = re.compile(rf"projects/{PROJECT}/locations/{LOCATION}/endpoints/\d+")


def emulator_config(**overrides: Any) -> EmulatorConfig:
    fields: dict[str, Any] = {
        "step_seconds": 0.01,
        "log_requests": False,
        "seed": 7,
        "buckets": frozenset({BUCKET}),
    }
    fields.update(overrides)
    return EmulatorConfig(**fields)


@pytest.fixture
async def vx_emulator() -> AsyncIterator[Emulator]:
    """An emulator whose Vertex jobs tune in a fraction of a second, with the staging bucket."""
    async with Emulator(emulator_config()) as emulator:
        yield emulator


@pytest.fixture
def vx_key_file(vx_emulator: Emulator, tmp_path: Path) -> Path:
    """A service-account key file whose token_uri is the emulator's."""
    return vx_emulator.write_service_account_file(tmp_path / "vertex-key.json", project=PROJECT)


def vertex_settings(
    database_url: str,
    emulator: Emulator,
    key_file: Path,
    *,
    replica: str = "vertex-a",
    max_active_jobs: int = 10,
    vertex: Mapping[str, Any] | None = None,
    **purge: Any,
) -> Settings:
    """Settings for the daemon's parts in this process, on Vertex AI at the emulator, with quick timings."""
    return Settings(
        backend="vertex",
        database={"url": database_url, "listen": False},
        vertex={
            "project": PROJECT,
            "location": LOCATION,
            "base_url": emulator.base_url,
            "storage_url": emulator.base_url,
            "credentials_file": str(key_file),
            "staging_uri": STAGING_URI,
            "max_active_jobs": max_active_jobs,
            "creates_per_minute": 6000,
            "requests_per_minute": 600000,
            "max_concurrent_creates": 4,
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.2,
            **(vertex or {}),
        },
        daemon={"replica_name": replica, "lease_seconds": 3},
        poll={"min_interval": 0.05, "max_interval": 0.2, "min_step_seconds": 0},
        purge=purge,
    )


def vertex_environment(
    database_url: str, emulator: Emulator, key_file: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a `tunekeeper run` subprocess on Vertex AI at the emulator."""
    return daemon_environment(
        database_url,
        emulator.base_url,
        {
            "TUNEKEEPER_BACKEND": "vertex",
            "TUNEKEEPER_VERTEX__PROJECT": PROJECT,
            "TUNEKEEPER_VERTEX__LOCATION": LOCATION,
            "TUNEKEEPER_VERTEX__BASE_URL": emulator.base_url,
            "TUNEKEEPER_VERTEX__STORAGE_URL": emulator.base_url,
            "TUNEKEEPER_VERTEX__CREDENTIALS_FILE": str(key_file),
            "TUNEKEEPER_VERTEX__STAGING_URI": STAGING_URI,
            "TUNEKEEPER_VERTEX__CREATES_PER_MINUTE": "6000",
            "TUNEKEEPER_VERTEX__REQUESTS_PER_MINUTE": "600000",
            "TUNEKEEPER_VERTEX__RETRY_BASE_DELAY": "0.01",
            "TUNEKEEPER_VERTEX__RETRY_MAX_DELAY": "0.2",
            "TUNEKEEPER_VERTEX__MAX_RETRIES": "8",
            **(extra or {}),
        },
    )


async def one_pass(worker: JobWorker) -> None:
    """What one turn of the worker's loop does: claim what is due and handle it."""
    for job in await worker.claim(100):
        await worker.handle(job)


async def get_job(store: JobStore, job_id: int) -> Job:
    job = await store.get_job(job_id)
    assert job is not None, job_id
    return job


async def tune(context: DaemonContext, name: str, state: State = State.SUCCEEDED, **fields: Any) -> Job:
    """A new job, submitted by the dispatcher and followed by the poller until it is in `state`."""
    job_id = await context.store.add_job(NewJob(display_name=name, training_data=PAIRS, **fields))
    await one_pass(Dispatcher(context))
    return await follow(context, job_id, state)


async def follow(context: DaemonContext, job_id: int, state: State, *, within: float = 15.0) -> Job:
    """Poll the job (one poller pass at a time) until it is in `state`; it must not end anywhere else."""
    poller = Poller(context)

    async def reached() -> Job | None:
        await one_pass(poller)
        job = await get_job(context.store, job_id)
        assert job.state in (State.TUNING, state), (job.state, job.last_error)
        return job if job.state == state else None

    return await wait_until(reached, within=within, message=f"job {job_id} to be {state}")


async def wait_state(store: JobStore, job_id: int, state: State, within: float = 20.0) -> Job:
    async def reached() -> Job | None:
        job = await get_job(store, job_id)
        return job if job.state == state else None

    return await wait_until(reached, within=within, message=f"job {job_id} to be {state}")


async def request_cancel(store: JobStore, job_id: int, expected: State) -> None:
    """A producer's cancel, in plain SQL; the state in the WHERE proves the request met the job as meant."""
    statement = sa.text("UPDATE tuning_jobs SET cancel_requested = TRUE WHERE id = :id AND state = :state")
    async with store.engine.begin() as conn:
        updated = await conn.execute(statement, {"id": job_id, "state": expected.value})
    assert updated.rowcount == 1, f"job {job_id} was not {expected}"


def kinds(events: list[JobEvent]) -> list[str]:
    return [event.kind for event in events if event.kind != "progress"]


def vertex(context: DaemonContext) -> VertexBackend:
    assert isinstance(context.backend, VertexBackend)
    return context.backend


def client(context: DaemonContext) -> VertexClient:
    """The Vertex client behind the context's backend, for doing what another tool (or a person) would do."""
    return vertex(context).client


def staged_uri(context: DaemonContext, job_id: int) -> str:
    return f"{STAGING_URI}/{context.deployment}/{job_id}/train.jsonl"


async def staged(context: DaemonContext, job_id: int) -> bool:
    """Whether the job's training file is in the staging bucket."""
    return await client(context).storage.stat(staged_uri(context, job_id)) is not None


async def endpoint_exists(context: DaemonContext, name: str) -> bool:
    try:
        await client(context).get_endpoint(name)
    except NotFound:
        return False
    return True


def tuning_state(emulator: Emulator, name: str | None) -> str:
    """The emulator's own record of a tuning job's state."""
    assert name is not None
    state: str = emulator.stats()["tuning_jobs"][name]["state"]
    return state


def creates_for(emulator: Emulator, job_id: int) -> dict[str, int]:
    """Create requests (attempted, accepted) that carried the job's label."""
    counts: dict[str, int] = emulator.stats()["tuning_creates"]["by_label"].get(f"tunekeeper-job={job_id}", {})
    return counts


def route_count(emulator: Emulator, route: str, status: str = "200") -> int:
    counts = emulator.stats()["requests"]["by_route_status"].get(route, {})
    return int(counts.get(status, 0))


def deployments(emulator: Emulator) -> dict[str, Any]:
    found: dict[str, Any] = emulator.stats()["deployments"]
    return found


async def insert_jobs(engine: AsyncEngine, count: int, *, name: str, epochs: int = 1) -> list[int]:
    """`count` jobs in one multi-row INSERT, as a producer would (no batch size: not a Vertex setting); their ids."""
    rows = [{"display_name": f"{name} {n}", "training_data": PAIRS[:2], "epoch_count": epochs} for n in range(count)]
    async with engine.begin() as conn:
        result = await conn.execute(tuning_jobs.insert().values(rows).returning(tuning_jobs.c.id))
        ids = sorted(result.scalars())
    assert len(ids) == count
    return ids


async def finished_ago(store: JobStore, job_id: int, ago: timedelta) -> None:
    statement = sa.text("UPDATE tuning_jobs SET finished_at = :at WHERE id = :id")
    async with store.engine.begin() as conn:
        await conn.execute(statement, {"id": job_id, "at": store.clock() - ago})


class RefuseDeletes:
    """Makes the emulator refuse to delete models, as a service may (403, Google's error shape), while on."""

    def __init__(self) -> None:
        self.on = False
        self.refused = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.on and request.method == "DELETE" and "/models/" in request.path:
            self.refused += 1
            body = {
                "error": {
                    "code": 403,
                    "message": "Deleting tuned models is not allowed.",
                    "status": "PERMISSION_DENIED",
                }
            }
            return web.json_response(body, status=403)
        response: web.StreamResponse = await handler(request)
        return response


@contextlib.asynccontextmanager
async def emulator_with(config: EmulatorConfig, *middlewares: Any) -> AsyncIterator[Emulator]:
    """A running emulator with extra aiohttp middlewares (added before start: the app freezes then)."""
    emulator = Emulator(config)
    emulator.app.middlewares.extend(middlewares)
    async with emulator:
        yield emulator
