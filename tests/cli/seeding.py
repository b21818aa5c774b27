"""Jobs put into a given state the way the daemon would: through the store's own transitions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from tests.pg import run_async
from tunekeeper.db.engine import make_engine
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.states import State

T = TypeVar("T")

PAIRS = [{"text_input": "1", "output": "2"}, {"text_input": "3", "output": "4"}]
SNAPSHOTS = [
    {"step": 10, "epoch": 1, "meanLoss": 2.5},
    {"step": 20, "epoch": 2, "meanLoss": 1.25},
    {"step": 30, "epoch": 3, "meanLoss": 0.5},
    {"step": 40, "epoch": 4, "meanLoss": 0.125},
]
SUBMIT_ERROR = "PERMISSION_DENIED: the API key cannot tune models"


def in_store(database_url: str, action: Callable[[JobStore], Awaitable[T]]) -> T:
    """Run `action` on a JobStore for the database, from a synchronous test."""

    async def run() -> T:
        engine = make_engine(database_url)
        try:
            return await action(JobStore(engine))
        finally:
            await engine.dispose()

    return run_async(run)


async def seed_job(store: JobStore, state: State, name: str = "number generator", **request: Any) -> int:
    """A job in `state`, with the events the daemon records on the way. Seed queued jobs last: a claim takes
    the oldest queued job."""
    job_id = await store.add_job(NewJob(display_name=name, training_data=PAIRS, **request))
    if state == State.QUEUED:
        return job_id
    if state == State.CANCELLED:
        await store.request_cancel(job_id)
        await store.cancel_queued()
        return job_id
    [job] = await store.claim_for_submission("tests", limit=1, max_active=1000, lease_seconds=60)
    assert job.id == job_id, "another queued job was claimed: seed queued jobs last"
    if state == State.INVALID:
        await store.mark_invalid(job, error="training_data: example 1: missing output")
        return job_id
    if state == State.FAILED:
        await store.mark_submit_failed(job, error=SUBMIT_ERROR)
        return job_id
    model = f"tunedModels/{job.tuned_model_id}"
    await store.mark_accepted(
        job, operation_name=f"{model}/operations/op-{job_id}", tuned_model_name=model, total_steps=100, adopted=False
    )
    tuning = await store.get_job(job_id)
    assert tuning is not None
    progress = {"completed_steps": 62, "progress_percent": 62.0, "mean_loss": 0.125, "snapshots": SNAPSHOTS}
    await store.record_progress(
        tuning, progress, next_poll_at=datetime.now(UTC) + timedelta(hours=1), event={"percent": 62.0}
    )
    if state == State.TUNING:
        return job_id
    if state == State.SUCCEEDED:
        await store.mark_succeeded(tuning, model={}, wants_eval=False)
        return job_id
    if state == State.CANCELLING:
        await store.request_cancel(job_id)
        await store.claim_cancellations("tests", limit=10, lease_seconds=60)
        return job_id
    raise ValueError(f"seed_job cannot make a {state} job")
