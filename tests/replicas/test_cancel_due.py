"""When a cancel request becomes workable (`JobStore.next_cancel_due`), on both backends.

The canceller sleeps until then: a notification can be spent on a claim that could not take the job yet (its
row was busy, or its create still in flight), and this is what brings the canceller back in time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from tunekeeper.db.engine import make_engine
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.db.tables import tuning_jobs
from tunekeeper.states import State

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    engine = make_engine(database_url)
    yield JobStore(engine, clock=lambda: NOW)
    await engine.dispose()


async def put(store: JobStore, state: State, *, requested: bool, lease: timedelta | None = None) -> int:
    job_id = await store.add_job(NewJob(display_name=f"{state} job"))
    values = {"state": state.value, "cancel_requested": requested, "lease_expires_at": NOW + lease if lease else None}
    async with store.engine.begin() as conn:
        await conn.execute(tuning_jobs.update().where(tuning_jobs.c.id == job_id).values(**values))
    return job_id


async def test_nothing_is_due_without_requests(store: JobStore) -> None:
    await put(store, State.TUNING, requested=False)
    await put(store, State.SUBMITTING, requested=False, lease=timedelta(seconds=5))
    await put(store, State.SUCCEEDED, requested=True)  # a late request: ignored by the claim, not waited for
    assert await store.next_cancel_due() is None


async def test_a_submission_in_flight_is_due_when_its_lease_runs_out(store: JobStore) -> None:
    await put(store, State.SUBMITTING, requested=True, lease=timedelta(seconds=40))
    await put(store, State.CANCELLING, requested=True, lease=timedelta(seconds=30))  # another canceller's
    await put(store, State.SUBMITTING, requested=False, lease=timedelta(seconds=10))  # no request: not ours
    assert await store.next_cancel_due() == NOW + timedelta(seconds=30)


@pytest.mark.parametrize("state", [State.QUEUED, State.TUNING])
async def test_a_request_on_a_queued_or_tuning_job_is_due_now(store: JobStore, state: State) -> None:
    await put(store, State.SUBMITTING, requested=True, lease=timedelta(seconds=40))
    await put(store, state, requested=True)
    assert await store.next_cancel_due() == NOW
