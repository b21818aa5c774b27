"""What the replica tests share: fast job inserts, a set of daemon processes, and the audits of the outcome."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness import DaemonProcess
from tunekeeper.db.records import Job, JobEvent
from tunekeeper.db.store import JobStore
from tunekeeper.db.tables import job_events, tuning_jobs
from tunekeeper.emulator import Emulator, EmulatorConfig
from tunekeeper.states import State, Transition

# Two examples, one epoch, batch 2: a single tuning step, so a job tunes in one `step_seconds`.
TINY_DATASET = [{"text_input": "1", "output": "2"}, {"text_input": "3", "output": "4"}]
# Ten examples: ceil(10 * epochs / batch) steps.
TEN_EXAMPLES = [{"text_input": str(n), "output": str(n + 1)} for n in range(10)]


async def insert_jobs(
    engine: AsyncEngine,
    count: int,
    *,
    name: str,
    training_data: Sequence[Mapping[str, str]] = TINY_DATASET,
    epochs: int = 1,
    batch: int = 2,
) -> list[int]:
    """`count` jobs in one multi-row INSERT (one statement, one transaction, one NOTIFY per row); their ids."""
    data = [dict(example) for example in training_data]
    rows = [
        {"display_name": f"{name} {n}", "training_data": data, "epoch_count": epochs, "batch_size": batch}
        for n in range(count)
    ]
    async with engine.begin() as conn:
        result = await conn.execute(tuning_jobs.insert().values(rows).returning(tuning_jobs.c.id))
        ids = sorted(result.scalars())
    assert len(ids) == count
    return ids


async def all_events(engine: AsyncEngine) -> dict[int, list[JobEvent]]:
    """Every job's events, in the order they were recorded."""
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(job_events).order_by(job_events.c.id))).mappings().all()
    found: dict[int, list[JobEvent]] = defaultdict(list)
    for row in rows:
        if row["job_id"] is not None:
            found[row["job_id"]].append(JobEvent.from_row(row))
    return found


def claims(events: Iterable[JobEvent]) -> list[JobEvent]:
    return [event for event in events if event.kind == Transition.CLAIMED]


async def state_counts(store: JobStore) -> dict[State, int]:
    counts = await store.count_by_state()
    return {state: counts.get(state, 0) for state in State}


def replica_env(env: Mapping[str, str], name: str) -> dict[str, str]:
    return {**env, "TUNEKEEPER_DAEMON__REPLICA_NAME": name}


@contextlib.asynccontextmanager
async def replicas(directory: Path, env: Mapping[str, str], names: Sequence[str]) -> AsyncIterator[list[DaemonProcess]]:
    """Daemon processes on one database, each with its replica name, started together; killed on the way out."""
    daemons = [DaemonProcess(directory, replica_env(env, name), name=name) for name in names]
    try:
        await asyncio.gather(*(daemon.start(within=40) for daemon in daemons))
        yield daemons
    finally:
        for daemon in daemons:
            if daemon.running:
                await daemon.kill()


def model_creates(emulator: Emulator) -> dict[str, dict[str, int]]:
    by_model: dict[str, dict[str, int]] = emulator.stats()["creates"]["by_model"]
    return by_model


def assert_each_model_created_once(emulator: Emulator, jobs: Sequence[Job]) -> dict[str, Any]:
    """No model id was accepted twice, each job's model was accepted once, and nothing else was created."""
    stats = emulator.stats()
    by_model: dict[str, dict[str, int]] = stats["creates"]["by_model"]
    twice = {model: counts for model, counts in by_model.items() if counts["accepted"] > 1}
    assert not twice, f"models created more than once: {twice}"
    for job in jobs:
        assert job.tuned_model_id is not None, job.id
        assert by_model.get(job.tuned_model_id, {}).get("accepted") == 1, (job.id, by_model.get(job.tuned_model_id))
        assert job.tuned_model_name == f"tunedModels/{job.tuned_model_id}", job.id
    assert stats["creates"]["accepted"] == len(jobs), stats["creates"]["accepted"]
    return stats


class CreateArrivals:
    """Counts create requests as they reach the emulator, before its added latency: requests in flight."""

    def __init__(self) -> None:
        self.count = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST" and request.path.rstrip("/").endswith("/tunedModels"):
            self.count += 1
        response: web.StreamResponse = await handler(request)
        return response


@contextlib.asynccontextmanager
async def running_emulator(config: EmulatorConfig, arrivals: CreateArrivals | None = None) -> AsyncIterator[Emulator]:
    emulator = Emulator(config)
    if arrivals is not None:
        emulator.app.middlewares.append(arrivals.middleware)  # before start: the app freezes then
    async with emulator:
        yield emulator
