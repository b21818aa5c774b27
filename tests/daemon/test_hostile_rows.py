"""One hostile row, or one value the database refuses, fails its job alone and never the daemon.

The daemon runs in-process (`running_service`) against the emulator; the rows are written as a producer's
plain SQL would write them, past every check the schema can make.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.daemon.test_resilience import new_job, running_service, service_settings
from tests.jobs import wait_all_terminal
from tests.waiting import wait_until
from tunekeeper.cli import render
from tunekeeper.daemon.metrics import Metrics
from tunekeeper.daemon.service import open_context
from tunekeeper.daemon.worker import JobWorker
from tunekeeper.db.records import Job
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State

DEPTH = {"sqlite": 1_500, "postgresql": 5_000}


async def insert_deep_row(store: JobStore) -> int:
    """A queued job whose eval_data is nested deeper than Python's json.loads can follow (the type takes it)."""
    depth = DEPTH[store.engine.dialect.name]
    value = "CAST(:deep AS jsonb)" if store.is_postgres else ":deep"
    async with store.engine.begin() as conn:
        if store.is_postgres:  # past migration 0005's depth trigger: a row written before it
            await conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        inserted = await conn.execute(
            sa.text(
                "INSERT INTO tuning_jobs (display_name, training_data, priority, eval_data) VALUES"
                f" ('deep', CAST(:pairs AS {'jsonb' if store.is_postgres else 'TEXT'}), 10, {value}) RETURNING id"
            ),
            {"pairs": '[{"text_input": "1", "output": "2"}]', "deep": "[" * depth + "]" * depth},
        )
        job_id: int = inserted.scalar_one()
    return job_id


async def test_a_row_nested_too_deep_fails_alone_while_the_daemon_runs_on(
    database_url: str, store: JobStore, emulator: Emulator
) -> None:
    deep = await insert_deep_row(store)  # priority 10: claimed first, every time
    good = [await store.add_job(new_job(f"good {n}")) for n in range(2)]

    async with running_service(service_settings(database_url, emulator.base_url)) as service:
        jobs = {job.id: job for job in await wait_all_terminal(store, 3, within=30)}
        assert service.context is not None
        assert not any(worker.failing for worker in service._workers)

    assert [jobs[job_id].state for job_id in good] == [State.SUCCEEDED] * 2
    assert jobs[deep].state == State.INVALID
    assert jobs[deep].last_error == "the row cannot be read: column eval_data holds a value of the wrong type or form"


async def test_text_that_is_not_utf8_fails_its_job_alone(sqlite_url: str, emulator: Emulator) -> None:
    path = make_url(sqlite_url).database
    assert path is not None
    with sqlite3.connect(Path(path)) as db:
        db.execute(
            "INSERT INTO tuning_jobs (display_name, training_data, priority) VALUES"
            """ (CAST(x'6a6f62ff' AS TEXT), '[{"text_input": "1", "output": "2"}]', 10)"""
        )
    async with open_context(service_settings(sqlite_url, emulator.base_url)) as context:
        good = await context.store.add_job(new_job("good"))
        async with running_service(service_settings(sqlite_url, emulator.base_url)):
            jobs = {job.id: job for job in await wait_all_terminal(context.store, 2, within=30)}
    assert jobs[good].state == State.SUCCEEDED
    assert jobs[1].state == State.INVALID
    assert jobs[1].last_error is not None and "column display_name" in jobs[1].last_error


class TestWorker(JobWorker):
    """A worker with the real loop, store and settings, whose claim or handling does what the test says."""

    __test__ = False
    name: ClassVar[str] = "test"

    def __init__(self, *args: Any, claim_error: Exception | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claim_error = claim_error
        self.handled: list[int] = []

    @property
    def concurrency(self) -> int:
        return 4

    async def claim(self, limit: int) -> Sequence[Job]:
        if self.claim_error is not None:
            raise self.claim_error
        return await self.context.store.claim_due_polls(limit=limit, lease_seconds=3)

    async def handle(self, job: Job) -> None:
        self.handled.append(job.id)
        # a service's answer with a count no column can hold
        await self.context.store.record_progress(
            job, {"total_steps": 2**70}, next_poll_at=self.context.store.clock(), event=None
        )


def claim_failures(metrics: Metrics, worker: str) -> float:
    prefix = f'tunekeeper_worker_claim_failures_total{{worker="{worker}"}}'
    lines = [line for line in metrics.render().decode().splitlines() if line.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else 0.0


async def test_a_claim_that_keeps_failing_is_survived_counted_and_not_ready(
    database_url: str, emulator: Emulator
) -> None:
    metrics = Metrics(process_metrics=False)
    async with open_context(service_settings(database_url, emulator.base_url), metrics) as context:
        worker = TestWorker(context, claim_error=ValueError("a claim that cannot work"))
        stopping = asyncio.Event()
        loop = asyncio.create_task(worker.run(stopping, grace=1))
        await wait_until(
            lambda: claim_failures(metrics, "test") >= 5 or loop.done(), within=10, message="five failed claims"
        )
        assert not loop.done(), "the worker loop ended"
        assert worker.failing  # readiness says "workers": false
        stopping.set()
        worker.nudge()
        await asyncio.wait_for(loop, 10)


async def test_an_outcome_the_database_refuses_fails_that_job_once(
    database_url: str, store: JobStore, emulator: Emulator
) -> None:
    job_id = await store.add_job(new_job("strange"))
    [job] = await store.claim_for_submission("me", limit=1, max_active=1, lease_seconds=3)
    await store.mark_accepted(job, operation_name="op", tuned_model_name=None, total_steps=5, adopted=False)
    async with open_context(service_settings(database_url, emulator.base_url)) as context:
        worker = TestWorker(context)
        stopping = asyncio.Event()
        loop = asyncio.create_task(worker.run(stopping, grace=1))
        try:
            failed: Job = await wait_until(
                lambda: _state_is(store, job_id, State.FAILED), within=10, message="the job to fail"
            )
        finally:
            stopping.set()
            worker.nudge()
            await asyncio.wait_for(loop, 10)
    assert failed.last_error is not None and "the database refused a value" in failed.last_error
    assert worker.handled == [job_id]  # once: not re-polled for ever


async def _state_is(store: JobStore, job_id: int, state: State) -> Job | None:
    job = await store.get_job(job_id)
    return job if job is not None and job.state == state else None


async def test_a_diverged_run_finishes_with_its_nan_losses_stored_as_null(
    database_url: str, store: JobStore, emulator: Emulator
) -> None:
    """The service reports a diverged run's loss as proto JSON's "NaN": jsonb refuses NaN, SQLite would store
    JSON that is not JSON. The job must still finish, once, with the losses it could not use left null."""
    emulator.configure(diverge_rate=1.0)
    await store.add_job(new_job("diverged", epochs=3, batch=4))

    async with running_service(service_settings(database_url, emulator.base_url)):
        [job] = await wait_all_terminal(store, 1, within=30)

    assert job.state == State.SUCCEEDED, job.last_error
    assert job.mean_loss is None
    losses = [snapshot["meanLoss"] for snapshot in job.snapshots]
    assert isinstance(losses[0], float) and losses[1:] == [None, None]
    assert emulator.stats()["models"][job.tuned_model_id]["operation_gets"] < 100  # not polled for ever
    printed = render.dumps(render.job_json(job))  # `show --json`
    json.loads(printed, parse_constant=lambda name: pytest.fail(f"show --json printed {name}"))


async def test_a_nul_in_a_models_output_is_stored_and_evaluated_once(
    database_url: str, store: JobStore, emulator: Emulator
) -> None:
    """PostgreSQL's jsonb takes no U+0000: the evaluation's results must still be stored, once, with the NUL
    dropped, and the model asked once per pair (not again at every lease, for ever)."""
    emulator.configure(nul_rate=1.0)
    pairs = [{"text_input": str(n), "output": str(n + 1)} for n in range(3)]
    job_id = await store.add_job(new_job("speaks nul", eval_data=pairs))

    async with running_service(service_settings(database_url, emulator.base_url)):
        evaluated: list[Any] = await wait_until(
            lambda: _events_of(store, job_id, "evaluated"), within=30, message="the evaluation to be stored"
        )
        job = await store.get_job(job_id)

    assert job is not None and len(evaluated) == 1
    assert [result["output"] for result in job.eval_results] == ["1", "2", "3"]
    assert job.eval_score == 0.0  # compared as the model said it, NUL and all; stored without the NUL
    assert emulator.stats()["requests"]["by_route"]["tunedModels.generateContent"] == len(pairs)


async def _events_of(store: JobStore, job_id: int, kind: str) -> list[Any] | None:
    found = [event for event in await store.events(job_id) if event.kind == kind]
    return found or None
