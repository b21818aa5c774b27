"""The JobStore's behaviour, on SQLite and on PostgreSQL (every test taking `database_url` runs on both).

Time is a controllable clock: each test starts at T0 and advances it by hand, so that lease expiry, retry times,
poll times and purge windows are exact, including their boundaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from tunekeeper.cli.render import SUMMARY_FIELDS
from tunekeeper.db.engine import make_engine
from tunekeeper.db.records import Job, NewJob
from tunekeeper.db.store import CancelOutcome, JobFilter, JobStore, PurgeCandidate, PurgePolicy, PurgeRules
from tunekeeper.db.tables import leases, tuning_jobs
from tunekeeper.states import IllegalTransition, State, Transition, check, is_valid_path

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PAIRS = [{"text_input": "1", "output": "2"}, {"text_input": "3", "output": "4"}]
_README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
README_CONTRACT = _README[_README.index("### The database contract") : _README.index("### States")]
LEASE = 60.0
TICK = timedelta(microseconds=1)


class Clock:
    """The store's clock: `now` moves only when a test moves it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0.0, *, delta: timedelta | None = None) -> datetime:
        self.now += delta if delta is not None else timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine, clock: Clock) -> JobStore:
    return JobStore(engine, clock=clock)


# ---- helpers ----------------------------------------------------------------------------------------------


async def add(store: JobStore, name: str = "number generator", **request: Any) -> int:
    return await store.add_job(NewJob(display_name=name, training_data=PAIRS, **request))


async def get(store: JobStore, job_id: int) -> Job:
    job = await store.get_job(job_id)
    assert job is not None, f"job {job_id} is missing"
    return job


async def claim(
    store: JobStore, owner: str = "dispatcher-a", *, limit: int = 10, max_active: int = 10, prefix: str = ""
) -> list[Job]:
    return await store.claim_for_submission(
        owner, limit=limit, max_active=max_active, lease_seconds=LEASE, model_id_prefix=prefix
    )


async def claim_ids(store: JobStore, owner: str = "dispatcher-a", **kwargs: Any) -> list[int]:
    return [job.id for job in await claim(store, owner, **kwargs)]


async def claim_one(store: JobStore, job_id: int, owner: str = "dispatcher-a") -> Job:
    """Claim exactly `job_id` (the test makes sure it is the best due job)."""
    claimed = await claim(store, owner, limit=1)
    assert [job.id for job in claimed] == [job_id]
    return claimed[0]


async def accept(store: JobStore, job: Job) -> Job:
    assert await store.mark_accepted(
        job,
        operation_name=f"tunedModels/{job.tuned_model_id}/operations/op-{job.id}",
        tuned_model_name=f"tunedModels/{job.tuned_model_id}",
        total_steps=10,
        adopted=False,
    )
    return await get(store, job.id)


async def tuning_job(store: JobStore, name: str = "number generator", **request: Any) -> Job:
    """A new job taken through claim and acceptance into `tuning` (it must be the only due queued job)."""
    job_id = await add(store, name, **request)
    return await accept(store, await claim_one(store, job_id))


async def set_columns(engine: AsyncEngine, job_id: int, **values: Any) -> None:
    """Put a row into a shape directly (the daemon's columns), as if earlier work had happened."""
    async with engine.begin() as conn:
        await conn.execute(tuning_jobs.update().where(tuning_jobs.c.id == job_id).values(**values))


async def run_sql(engine: AsyncEngine, statement: str, **params: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text(statement), params)


async def history(store: JobStore, job_id: int) -> list[tuple[str, State | None, State | None]]:
    return [(event.kind, event.from_state, event.to_state) for event in await store.events(job_id)]


async def event_count(store: JobStore, job_id: int) -> int:
    return len(await store.events(job_id))


async def assert_one_transition(
    store: JobStore, job_id: int, before: int, transition: Transition, from_state: State, to_state: State
) -> dict[str, Any]:
    """Exactly one event was appended, naming the edge; returns its detail."""
    events = await store.events(job_id)
    assert len(events) == before + 1, [(e.kind, e.detail) for e in events]
    last = events[-1]
    assert (last.kind, last.from_state, last.to_state) == (transition.value, from_state, to_state)
    assert check(transition, from_state) is to_state, "the store recorded an edge the state machine lacks"
    assert last.at == store.clock()
    assert (await get(store, job_id)).state is to_state
    return last.detail


# ---- producers and reading --------------------------------------------------------------------------------


async def test_add_job_round_trips_the_request(store: JobStore) -> None:
    keep = T0 + timedelta(days=3)
    job_id = await store.add_job(
        NewJob(
            display_name="number generator",
            training_data=PAIRS,
            base_model="models/gemini-1.5-flash-001-tuning",
            epoch_count=5,
            batch_size=4,
            learning_rate=0.001,
            learning_rate_multiplier=1.5,
            priority=3,
            labels={"team": "search", "run": 7},
            keep_until=keep,
            eval_data=[{"text_input": "5", "output": "6"}],
        )
    )
    job = await get(store, job_id)
    assert job.id == job_id
    assert job.state is State.QUEUED
    assert (job.display_name, job.training_data, job.base_model) == (
        "number generator",
        PAIRS,
        "models/gemini-1.5-flash-001-tuning",
    )
    assert (job.epoch_count, job.batch_size, job.learning_rate, job.learning_rate_multiplier) == (5, 4, 0.001, 1.5)
    assert (job.priority, job.labels, job.keep_until) == (3, {"team": "search", "run": 7}, keep)
    assert job.eval_data == [{"text_input": "5", "output": "6"}]
    assert job.tuned_model_id is None
    assert job.cancel_requested is False
    assert job.attempts == 0
    assert job.lease_owner is job.lease_expires_at is job.finished_at is None
    assert isinstance(job.created_at, datetime)
    assert job.created_at.tzinfo is not None
    assert await store.get_job(job_id + 1000) is None


async def test_plain_sql_insert_of_the_design_example_is_a_queued_job(store: JobStore, engine: AsyncEngine) -> None:
    await run_sql(
        engine,
        "INSERT INTO tuning_jobs (display_name, training_data) VALUES ('number generator', "
        """'[{"text_input": "1", "output": "2"}, {"text_input": "3", "output": "4"}]')""",
    )
    [job] = await store.list_jobs()
    assert job.state is State.QUEUED
    assert job.display_name == "number generator"
    assert job.training_data == PAIRS
    assert (job.priority, job.attempts, job.cancel_requested, job.tuned_model_id) == (0, 0, False, None)
    assert job.created_at.tzinfo is not None
    assert abs(job.created_at - datetime.now(UTC)) < timedelta(minutes=5), "created_at is the server's now, in UTC"
    assert await store.count_by_state() == {State.QUEUED: 1}
    [claimed] = await claim(store)
    assert claimed.id == job.id
    assert claimed.tuned_model_id == f"number-generator-{job.id}"


async def test_plain_sql_cancel_request_is_seen(store: JobStore, engine: AsyncEngine) -> None:
    job_id = await add(store)
    await run_sql(engine, "UPDATE tuning_jobs SET cancel_requested = TRUE WHERE id = :id", id=job_id)
    assert (await get(store, job_id)).cancel_requested is True
    assert await store.request_cancel(job_id) == (CancelOutcome.ALREADY_REQUESTED, State.QUEUED)
    assert await claim(store) == []
    assert [job.id for job in await store.cancel_queued()] == [job_id]


async def test_list_jobs_and_count_by_state(store: JobStore) -> None:
    assert await store.list_jobs() == []
    assert await store.count_by_state() == {}
    ids = [await add(store, f"job {n}") for n in range(5)]
    claimed = await claim_ids(store, limit=2)
    assert claimed == ids[:2]

    assert [job.id for job in await store.list_jobs()] == ids[::-1], "newest first"
    assert [job.id for job in await store.list_jobs(limit=2)] == [ids[4], ids[3]]
    assert [job.id for job in await store.list_jobs(JobFilter(states=frozenset({State.QUEUED})))] == [
        ids[4],
        ids[3],
        ids[2],
    ]
    assert [job.id for job in await store.list_jobs(JobFilter(states=frozenset({State.SUBMITTING, State.FAILED})))] == [
        ids[1],
        ids[0],
    ]
    assert await store.list_jobs(JobFilter(states=frozenset({State.TUNING}))) == []
    assert await store.count_by_state() == {State.QUEUED: 3, State.SUBMITTING: 2}


async def test_a_filter_selects_by_state_label_and_creation_time(store: JobStore, engine: AsyncEngine) -> None:
    first = await add(store, "a", labels={"team": "ml", "env": "prod"})
    second = await add(store, "b", labels={"team": "ml"})
    third = await add(store, "c", labels={"team": "web"})
    now = datetime.now(UTC)  # created_at is the database's time, not the store's clock
    await run_sql(
        engine, "UPDATE tuning_jobs SET created_at = :at WHERE id = :id", at=now - timedelta(days=2), id=first
    )

    assert await store.job_ids(JobFilter(labels=(("team", "ml"),))) == [first, second]
    assert await store.job_ids(JobFilter(labels=(("team", "ml"), ("env", "prod")))) == [first]
    assert await store.job_ids(JobFilter(labels=(("team", "nobody"),))) == []
    assert await store.job_ids(JobFilter(since=now - timedelta(days=1))) == [second, third]
    assert await store.job_ids(JobFilter(states=frozenset({State.QUEUED}), labels=(("team", "web"),))) == [third]
    assert [job.id for job in await store.list_jobs(JobFilter(labels=(("team", "ml"),)))] == [second, first]


async def test_census_knows_when_the_oldest_job_of_each_unfinished_state_entered_it(store: JobStore) -> None:
    ids = [await add(store, f"job {n}") for n in range(3)]
    assert await claim_ids(store, limit=1) == ids[:1]
    census = await store.census()
    assert census.counts == {State.QUEUED: 2, State.SUBMITTING: 1}
    assert census.oldest.keys() == {State.QUEUED, State.SUBMITTING}
    oldest_queued = (await get(store, ids[1])).created_at
    assert census.oldest[State.QUEUED] == oldest_queued
    assert census.oldest[State.SUBMITTING] == (await get(store, ids[0])).updated_at


# ---- claiming for submission ------------------------------------------------------------------------------


async def test_claim_takes_priority_then_id_order_within_the_limit(store: JobStore) -> None:
    a, b, c, d, e = [await add(store, f"job {n}", priority=p) for n, p in enumerate([0, 5, 5, 1, 0])]
    assert await claim_ids(store, limit=3) == [b, c, d]
    assert await claim_ids(store, limit=3) == [a, e]
    assert await claim_ids(store, limit=3) == []


async def test_claim_moves_jobs_to_submitting_with_a_lease(store: JobStore) -> None:
    job_id = await add(store)
    [claimed] = await claim(store, "dispatcher-a")
    stored = await get(store, job_id)
    for job in (claimed, stored):
        assert job.state is State.SUBMITTING
        assert job.lease_owner == "dispatcher-a"
        assert job.lease_expires_at == T0 + timedelta(seconds=LEASE)
        assert job.attempts == 1
        assert job.tuned_model_id == f"number-generator-{job_id}"
    assert stored.updated_at == T0
    assert await history(store, job_id) == [("claimed", State.QUEUED, State.SUBMITTING)]
    [event] = await store.events(job_id)
    assert event.detail == {"attempt": 1, "owner": "dispatcher-a"}
    assert "taken_over_from" not in event.detail


async def test_claim_derives_the_model_id_with_the_prefix_and_keeps_an_explicit_one(store: JobStore) -> None:
    named = await add(store, "Number Generator!", priority=2)
    explicit = await add(store, "whatever", tuned_model_id="my-own-model-1", priority=1)
    claimed = {job.id: job.tuned_model_id for job in await claim(store, prefix="tk-")}
    assert claimed == {named: f"tk-number-generator-{named}", explicit: "my-own-model-1"}
    assert (await get(store, named)).tuned_model_id == f"tk-number-generator-{named}"


async def test_max_active_counts_submitting_tuning_and_cancelling(store: JobStore) -> None:
    ids = [await add(store, f"job {n}") for n in range(7)]
    tuning_one, cancelling_one, submitting_one = await claim(store, limit=3)
    succeeded = await accept(store, tuning_one)
    await accept(store, cancelling_one)
    assert await store.request_cancel(cancelling_one.id) == (CancelOutcome.REQUESTED, State.TUNING)
    assert [job.id for job in await store.claim_cancellations("canceller", limit=5, lease_seconds=LEASE)] == [
        cancelling_one.id
    ]
    assert await store.count_by_state() == {
        State.TUNING: 1,
        State.CANCELLING: 1,
        State.SUBMITTING: 1,
        State.QUEUED: 4,
    }
    # three slots are held: one more fits under max_active=4, and then none
    assert await claim_ids(store, max_active=4) == [ids[3]]
    assert await claim_ids(store, max_active=4) == []
    # a finished job holds no slot
    assert await store.mark_succeeded(succeeded, model={"progress_percent": 100.0}, wants_eval=False)
    assert await claim_ids(store, max_active=4) == [ids[4]]
    assert await claim_ids(store, max_active=4) == []
    assert submitting_one.id == ids[2]


async def test_claim_skips_jobs_with_a_cancel_request(store: JobStore) -> None:
    wanted, unwanted = await add(store, "a"), await add(store, "b", priority=9)
    assert await store.request_cancel(unwanted) == (CancelOutcome.REQUESTED, State.QUEUED)
    assert await claim_ids(store) == [wanted]
    assert (await get(store, unwanted)).state is State.QUEUED


async def test_claim_waits_for_next_attempt_at(store: JobStore, clock: Clock) -> None:
    job_id = await add(store)
    job = await claim_one(store, job_id)
    retry_at = T0 + timedelta(seconds=30)
    assert await store.schedule_retry(job, error="503 UNAVAILABLE", retry_at=retry_at)
    assert await claim(store) == []
    clock.now = retry_at - TICK
    assert await claim(store) == []
    clock.now = retry_at
    [again] = await claim(store)
    assert again.id == job_id
    assert again.attempts == 2
    assert again.tuned_model_id == job.tuned_model_id
    assert (await store.events(job_id))[-1].detail == {"attempt": 2, "owner": "dispatcher-a"}


async def test_submission_waiting_sees_only_queued_jobs_the_claim_could_take(store: JobStore, clock: Clock) -> None:
    assert not await store.submission_waiting()
    cancelled = await add(store, "cancelled")
    assert await store.submission_waiting()
    assert await store.request_cancel(cancelled) == (CancelOutcome.REQUESTED, State.QUEUED)
    assert not await store.submission_waiting()  # a cancel request keeps it from the dispatcher
    retried = await add(store, "retried")
    job = await claim_one(store, retried)
    assert await store.schedule_retry(job, error="503 UNAVAILABLE", retry_at=T0 + timedelta(seconds=30))
    assert not await store.submission_waiting()  # its retry is not due yet
    clock.now = T0 + timedelta(seconds=30)
    assert await store.submission_waiting()
    await claim_one(store, retried)
    assert not await store.submission_waiting()


async def test_derived_model_id_taken_by_another_job_makes_the_job_invalid(store: JobStore) -> None:
    victim = await add(store, "number generator")
    squatter = await add(store, "something else", tuned_model_id=f"number-generator-{victim}", priority=1)
    claimed = await claim(store)
    assert [job.id for job in claimed] == [squatter]

    job = await get(store, victim)
    assert job.state is State.INVALID
    assert job.tuned_model_id is None
    assert job.finished_at == T0
    assert job.attempts == 0, "no create was sent for it"
    assert job.last_error is not None
    assert f"number-generator-{victim}" in job.last_error
    assert f"job {squatter}" in job.last_error
    events = await store.events(victim)
    assert [(e.kind, e.to_state) for e in events] == [("rejected", State.INVALID)]
    assert events[0].detail == {"error": job.last_error}
    assert await store.count_by_state() == {State.SUBMITTING: 1, State.INVALID: 1}


async def test_derived_model_id_collision_with_a_finished_job(store: JobStore, clock: Clock) -> None:
    victim = await add(store, "number generator")
    squatter = await add(store, "old", tuned_model_id=f"number-generator-{victim}")
    await set_columns(store.engine, squatter, state=State.SUCCEEDED.value, attempts=1)
    assert await claim(store) == []
    job = await get(store, victim)
    assert job.state is State.INVALID
    assert f"job {squatter}" in (job.last_error or "")


async def test_expired_submission_is_taken_over_and_counted_once(store: JobStore, clock: Clock) -> None:
    first = await add(store, "first", priority=1)
    second, third = await add(store, "second"), await add(store, "third")
    original = await claim_one(store, first, "dispatcher-a")

    clock.advance(LEASE)  # the lease ends now: not yet expired
    assert await claim_ids(store, "dispatcher-b", max_active=1) == []
    clock.advance(delta=TICK)
    # first is taken over; it already holds a slot, so one queued job still fits under max_active=2
    taken = await claim(store, "dispatcher-b", max_active=2)
    assert [job.id for job in taken] == [first, second]
    assert taken[0].attempts == 2
    assert taken[0].lease_owner == "dispatcher-b"
    assert taken[0].tuned_model_id == original.tuned_model_id

    stored = await get(store, first)
    assert (stored.state, stored.lease_owner, stored.attempts) == (State.SUBMITTING, "dispatcher-b", 2)
    assert stored.lease_expires_at == clock.now + timedelta(seconds=LEASE)
    assert stored.tuned_model_id == original.tuned_model_id
    events = await store.events(first)
    assert [(e.kind, e.from_state, e.to_state) for e in events] == [
        ("claimed", State.QUEUED, State.SUBMITTING),
        ("claimed", State.SUBMITTING, State.SUBMITTING),
    ]
    assert events[1].detail == {"attempt": 2, "owner": "dispatcher-b", "taken_over_from": "dispatcher-a"}
    assert (await get(store, third)).state is State.QUEUED
    assert await store.count_by_state() == {State.SUBMITTING: 2, State.QUEUED: 1}


async def test_expired_submission_with_a_cancel_request_is_left_to_the_canceller(store: JobStore, clock: Clock) -> None:
    job_id = await add(store)
    await claim_one(store, job_id)
    assert await store.request_cancel(job_id) == (CancelOutcome.REQUESTED, State.SUBMITTING)
    clock.advance(LEASE + 1)
    assert await claim(store, "dispatcher-b") == []
    assert (await get(store, job_id)).lease_owner == "dispatcher-a"


# ---- concurrent claimers ----------------------------------------------------------------------------------


async def test_concurrent_claimers_never_share_a_job_nor_exceed_max_active(database_url: str) -> None:
    """Several replicas (engines) claim at once: on PostgreSQL the dispatch advisory lock and SKIP LOCKED, on
    SQLite the IMMEDIATE transactions, keep the claims disjoint and the total under max_active."""
    replicas = 6 if database_url.startswith("postgresql") else 3
    engines = [make_engine(database_url, pool_size=2) for _ in range(replicas)]
    try:
        stores = [JobStore(engine) for engine in engines]
        for n in range(40):
            await add(stores[0], f"job {n}")
        max_active = 11

        async def claimer(store: JobStore, owner: str) -> list[int]:
            got: list[int] = []
            for _ in range(6):
                jobs = await store.claim_for_submission(owner, limit=3, max_active=max_active, lease_seconds=600)
                assert all(job.lease_owner == owner for job in jobs)
                got += [job.id for job in jobs]
            return got

        results = await asyncio.gather(*(claimer(store, f"replica-{n}") for n, store in enumerate(stores)))
        everything = [job_id for got in results for job_id in got]
        assert len(everything) == len(set(everything)), f"a job was claimed twice: {results}"
        assert len(everything) == max_active
        assert await stores[0].count_by_state() == {State.SUBMITTING: max_active, State.QUEUED: 40 - max_active}
        for owner_index, got in enumerate(results):
            for job_id in got:
                job = await get(stores[0], job_id)
                assert job.lease_owner == f"replica-{owner_index}"
                assert len(await stores[0].events(job_id)) == 1
    finally:
        await asyncio.gather(*(engine.dispose() for engine in engines))


async def test_concurrent_pollers_and_cancellers_never_share_a_job(database_url: str) -> None:
    replicas = 6 if database_url.startswith("postgresql") else 3
    engines = [make_engine(database_url, pool_size=2) for _ in range(replicas)]
    try:
        stores = [JobStore(engine) for engine in engines]
        past = datetime.now(UTC) - timedelta(minutes=1)
        ids = [await add(stores[0], f"job {n}") for n in range(30)]
        async with engines[0].begin() as conn:
            await conn.execute(
                tuning_jobs.update()
                .where(tuning_jobs.c.id.in_(ids))
                .values(state=State.TUNING.value, attempts=1, next_poll_at=past)
            )
            await conn.execute(tuning_jobs.update().where(tuning_jobs.c.id.in_(ids[:12])).values(cancel_requested=True))

        async def poller(store: JobStore) -> list[int]:
            got: list[int] = []
            while jobs := await store.claim_due_polls(limit=2, lease_seconds=600):
                got += [job.id for job in jobs]
            return got

        async def canceller(store: JobStore, owner: str) -> list[int]:
            got: list[int] = []
            while jobs := await store.claim_cancellations(owner, limit=2, lease_seconds=600):
                got += [job.id for job in jobs]
            return got

        results = await asyncio.gather(
            *(poller(store) for store in stores), *(canceller(store, f"c{n}") for n, store in enumerate(stores))
        )
        polled = [job_id for got in results[:replicas] for job_id in got]
        cancelled = [job_id for got in results[replicas:] for job_id in got]
        assert sorted(polled) == sorted(ids[12:]), "each due poll taken exactly once"
        assert sorted(cancelled) == sorted(ids[:12]), "each cancellation taken exactly once"
        for job_id in ids[:12]:
            assert await history(stores[0], job_id) == [("cancel_started", State.TUNING, State.CANCELLING)]
    finally:
        await asyncio.gather(*(engine.dispose() for engine in engines))


# ---- guarded transitions ----------------------------------------------------------------------------------


async def test_mark_accepted(store: JobStore, clock: Clock) -> None:
    job_id = await add(store)
    job = await claim_one(store, job_id)
    assert await store.schedule_retry(job, error="503", retry_at=T0)
    job = await claim_one(store, job_id)
    clock.advance(5)
    before = await event_count(store, job_id)
    assert await store.mark_accepted(
        job, operation_name="tunedModels/m/operations/1", tuned_model_name="tunedModels/m", total_steps=42, adopted=True
    )
    detail = await assert_one_transition(store, job_id, before, Transition.ACCEPTED, State.SUBMITTING, State.TUNING)
    assert detail == {"operation": "tunedModels/m/operations/1", "tuned_model": "tunedModels/m", "adopted": True}
    stored = await get(store, job_id)
    assert (stored.operation_name, stored.tuned_model_name) == ("tunedModels/m/operations/1", "tunedModels/m")
    assert (stored.total_steps, stored.completed_steps, stored.progress_percent) == (42, 0, 0.0)
    assert stored.submitted_at == stored.next_poll_at == stored.updated_at == clock.now
    assert stored.lease_owner is stored.lease_expires_at is stored.last_error is None


async def test_schedule_retry(store: JobStore, clock: Clock) -> None:
    job_id = await add(store)
    job = await claim_one(store, job_id)
    retry_at = T0 + timedelta(minutes=2)
    before = await event_count(store, job_id)
    assert await store.schedule_retry(job, error="429 RESOURCE_EXHAUSTED", retry_at=retry_at)
    detail = await assert_one_transition(store, job_id, before, Transition.RETRY, State.SUBMITTING, State.QUEUED)
    assert detail == {"error": "429 RESOURCE_EXHAUSTED", "retry_at": retry_at.isoformat(), "attempt": 1}
    stored = await get(store, job_id)
    assert (stored.last_error, stored.next_attempt_at, stored.attempts) == ("429 RESOURCE_EXHAUSTED", retry_at, 1)
    assert stored.lease_owner is stored.lease_expires_at is None


async def test_a_refunded_retry_gives_the_attempt_back_but_never_below_one(store: JobStore, clock: Clock) -> None:
    job_id = await add(store)
    seen = []
    for _ in range(3):  # a failure that counts, then two quota refusals
        job = await claim_one(store, job_id)
        seen.append(job.attempts)
        refund = len(seen) > 1
        assert await store.schedule_retry(job, error="429 RESOURCE_EXHAUSTED", retry_at=T0, refund=refund)
        stored = await get(store, job_id)
        assert stored.state is State.QUEUED
    # Claims count 1, 2, 2: the refusals took back their own attempt, never the one that may have sent a create.
    assert seen == [1, 2, 2]
    assert stored.attempts == 1
    [*_, last] = await store.events(job_id)
    assert last.detail["refunded"] is True and last.detail["attempt"] == 2


@pytest.mark.parametrize(
    ("method", "transition", "to_state"),
    [
        ("mark_invalid", Transition.REJECTED, State.INVALID),
        ("mark_submit_failed", Transition.SUBMIT_FAILED, State.FAILED),
    ],
)
async def test_submission_ends(
    store: JobStore, clock: Clock, method: str, transition: Transition, to_state: State
) -> None:
    job_id = await add(store)
    job = await claim_one(store, job_id)
    clock.advance(3)
    before = await event_count(store, job_id)
    assert await getattr(store, method)(job, error="400 INVALID_ARGUMENT: bad")
    detail = await assert_one_transition(store, job_id, before, transition, State.SUBMITTING, to_state)
    assert detail == {"error": "400 INVALID_ARGUMENT: bad"}
    stored = await get(store, job_id)
    assert (stored.last_error, stored.finished_at) == ("400 INVALID_ARGUMENT: bad", clock.now)
    assert stored.lease_owner is stored.lease_expires_at is stored.next_poll_at is None


async def test_mark_succeeded(store: JobStore, clock: Clock) -> None:
    job = await tuning_job(store)
    clock.advance(600)
    before = await event_count(store, job.id)
    model = {"completed_steps": 10, "progress_percent": 100.0, "mean_loss": 0.125}
    assert await store.mark_succeeded(job, model=model, wants_eval=False)
    detail = await assert_one_transition(store, job.id, before, Transition.SUCCEEDED, State.TUNING, State.SUCCEEDED)
    assert detail == {"tuned_model": job.tuned_model_name}
    stored = await get(store, job.id)
    assert (stored.completed_steps, stored.progress_percent, stored.mean_loss) == (10, 100.0, 0.125)
    assert stored.finished_at == stored.last_polled_at == clock.now
    assert stored.next_poll_at is None


async def test_mark_tuning_failed(store: JobStore, clock: Clock) -> None:
    job = await tuning_job(store)
    clock.advance(60)
    before = await event_count(store, job.id)
    assert await store.mark_tuning_failed(job, error="tuning failed: bad data")
    detail = await assert_one_transition(store, job.id, before, Transition.TUNING_FAILED, State.TUNING, State.FAILED)
    assert detail == {"error": "tuning failed: bad data"}
    stored = await get(store, job.id)
    assert (stored.last_error, stored.finished_at, stored.next_poll_at) == ("tuning failed: bad data", clock.now, None)


@pytest.mark.parametrize("model_deleted", [True, False])
async def test_mark_cancelled(store: JobStore, clock: Clock, model_deleted: bool) -> None:
    job = await tuning_job(store)
    await store.request_cancel(job.id)
    [cancelling] = await store.claim_cancellations("canceller", limit=5, lease_seconds=LEASE)
    clock.advance(7)
    before = await event_count(store, job.id)
    assert await store.mark_cancelled(cancelling, model_deleted=model_deleted)
    detail = await assert_one_transition(store, job.id, before, Transition.CANCELLED, State.CANCELLING, State.CANCELLED)
    assert detail == {"model_deleted": model_deleted}
    stored = await get(store, job.id)
    assert stored.finished_at == clock.now
    assert stored.purged_at == (clock.now if model_deleted else None)
    assert stored.lease_owner is stored.lease_expires_at is None
    assert stored.cancel_requested is False, "the request is carried out"


async def test_mark_cancelled_from_queued(store: JobStore) -> None:
    job_id = await add(store)
    job = await get(store, job_id)
    assert await store.mark_cancelled(job, model_deleted=False)
    await assert_one_transition(store, job_id, 0, Transition.CANCELLED, State.QUEUED, State.CANCELLED)


async def test_mark_purged(store: JobStore, clock: Clock) -> None:
    job = await tuning_job(store)
    assert await store.mark_succeeded(job, model={}, wants_eval=False)
    succeeded = await get(store, job.id)
    clock.advance(3600)
    candidate = PurgeCandidate(succeeded, PurgePolicy.MAX_AGE)
    before = await history(store, job.id)
    assert await store.mark_purged(candidate)
    # The state keeps what happened to the job; the purge is a fact beside it (purged_at, an event).
    assert await history(store, job.id) == [*before, ("purged", None, None)]
    [event] = [e for e in await store.events(job.id) if e.kind == "purged"]
    assert event.detail == {"policy": "max_age", "tuned_model": succeeded.tuned_model_name}
    stored = await get(store, job.id)
    assert (stored.state, stored.purged_at) == (State.SUCCEEDED, clock.now)
    assert not await store.mark_purged(candidate), "purging twice is a stale snapshot"


async def test_mark_purged_of_a_model_that_was_already_gone_says_so(store: JobStore, clock: Clock) -> None:
    job_id = await finished_job(store, State.FAILED, T0 - timedelta(days=1), tuned_model_name="tunedModels/f")
    [candidate] = await store.purge_candidates(RULES, limit=10)
    assert await store.mark_purged(candidate, already_gone=True)
    [event] = [e for e in await store.events(job_id) if e.kind == "purged"]
    assert event.detail == {"policy": "failed", "tuned_model": "tunedModels/f", "already_gone": True}
    assert (await get(store, job_id)).state is State.FAILED


@pytest.mark.parametrize("state", [State.TUNING, State.INVALID, State.QUEUED])
async def test_mark_purged_leaves_a_job_without_a_finished_model_alone(
    store: JobStore, engine: AsyncEngine, state: State
) -> None:
    job_id = await add(store)
    await set_columns(engine, job_id, state=state.value)
    job = await get(store, job_id)
    assert not await store.mark_purged(PurgeCandidate(job, PurgePolicy.FAILED))
    assert await get(store, job_id) == job
    assert await store.events(job_id) == []


def test_purge_candidate_model_name() -> None:
    job = Job(**{field.name: None for field in dataclasses.fields(Job)})  # type: ignore[arg-type]
    named = dataclasses.replace(job, tuned_model_name="tunedModels/x-1", tuned_model_id="x-1")
    assert PurgeCandidate(named, PurgePolicy.FAILED).model_name == "tunedModels/x-1"
    unnamed = dataclasses.replace(job, tuned_model_id="y-2")
    assert PurgeCandidate(unnamed, PurgePolicy.FAILED).model_name == "tunedModels/y-2"


async def test_a_full_lifecycle_is_a_valid_path(store: JobStore, clock: Clock) -> None:
    job_id = await add(store)
    job = await claim_one(store, job_id)
    assert await store.schedule_retry(job, error="503", retry_at=T0)
    job = await accept(store, await claim_one(store, job_id))
    assert await store.mark_succeeded(job, model={}, wants_eval=False)
    assert await store.mark_purged(PurgeCandidate(await get(store, job_id), PurgePolicy.KEEP_UNTIL))
    events = [e for e in await store.events(job_id) if e.to_state is not None]
    assert [e.to_state for e in events] == [
        State.SUBMITTING,
        State.QUEUED,
        State.SUBMITTING,
        State.TUNING,
        State.SUCCEEDED,
    ]
    assert is_valid_path([State.QUEUED] + [e.to_state for e in events if e.to_state])
    for event in events:
        assert event.from_state is not None
        assert check(Transition(event.kind), event.from_state) is event.to_state


async def test_stale_state_changes_nothing(store: JobStore) -> None:
    job = await tuning_job(store)
    assert await store.mark_succeeded(job, model={}, wants_eval=False)
    before = await get(store, job.id)
    count = await event_count(store, job.id)
    assert not await store.mark_tuning_failed(job, error="late")
    assert not await store.mark_succeeded(job, model={"progress_percent": 1.0}, wants_eval=True)
    assert await get(store, job.id) == before
    assert await event_count(store, job.id) == count


@pytest.mark.parametrize("method", ["mark_accepted", "schedule_retry", "mark_invalid", "mark_submit_failed"])
async def test_a_submitter_whose_lease_was_taken_over_changes_nothing(
    store: JobStore, clock: Clock, method: str
) -> None:
    job_id = await add(store)
    old = await claim_one(store, job_id, "dispatcher-a")
    clock.advance(LEASE + 1)
    new = await claim_one(store, job_id, "dispatcher-b")
    before = await get(store, job_id)
    count = await event_count(store, job_id)
    calls: dict[str, Any] = {
        "mark_accepted": lambda job: store.mark_accepted(
            job, operation_name="op", tuned_model_name="tunedModels/m", total_steps=1, adopted=False
        ),
        "schedule_retry": lambda job: store.schedule_retry(job, error="503", retry_at=clock.now),
        "mark_invalid": lambda job: store.mark_invalid(job, error="bad"),
        "mark_submit_failed": lambda job: store.mark_submit_failed(job, error="bad"),
    }
    assert old.state is new.state is State.SUBMITTING
    assert await calls[method](old) is False
    assert await get(store, job_id) == before
    assert await event_count(store, job_id) == count
    assert await calls[method](new) is True


async def test_a_canceller_whose_lease_was_taken_over_changes_nothing(store: JobStore, clock: Clock) -> None:
    job = await tuning_job(store)
    await store.request_cancel(job.id)
    [old] = await store.claim_cancellations("canceller-a", limit=5, lease_seconds=LEASE)
    clock.advance(LEASE + 1)
    [new] = await store.claim_cancellations("canceller-b", limit=5, lease_seconds=LEASE)
    assert not await store.mark_cancelled(old, model_deleted=True)
    stored = await get(store, job.id)
    assert (stored.state, stored.lease_owner, stored.purged_at) == (State.CANCELLING, "canceller-b", None)
    assert await store.mark_cancelled(new, model_deleted=True)


ILLEGAL_CALLS: list[tuple[str, State]] = [
    ("mark_accepted", State.QUEUED),
    ("mark_accepted", State.TUNING),
    ("schedule_retry", State.TUNING),
    ("mark_invalid", State.TUNING),
    ("mark_submit_failed", State.TUNING),
    ("mark_succeeded", State.SUBMITTING),
    ("mark_succeeded", State.QUEUED),
    ("mark_tuning_failed", State.SUCCEEDED),
    ("mark_cancelled", State.TUNING),
    ("mark_cancelled", State.SUCCEEDED),
]


async def call_transition(store: JobStore, method: str, job: Job) -> bool:
    calls: dict[str, Any] = {
        "mark_accepted": lambda: store.mark_accepted(
            job, operation_name="op", tuned_model_name="tunedModels/m", total_steps=1, adopted=False
        ),
        "schedule_retry": lambda: store.schedule_retry(job, error="503", retry_at=T0),
        "mark_invalid": lambda: store.mark_invalid(job, error="bad"),
        "mark_submit_failed": lambda: store.mark_submit_failed(job, error="bad"),
        "mark_succeeded": lambda: store.mark_succeeded(job, model={}, wants_eval=False),
        "mark_tuning_failed": lambda: store.mark_tuning_failed(job, error="bad"),
        "mark_cancelled": lambda: store.mark_cancelled(job, model_deleted=False),
    }
    result: bool = await calls[method]()
    return result


@pytest.mark.parametrize(("method", "state"), ILLEGAL_CALLS, ids=[f"{m}-from-{s.value}" for m, s in ILLEGAL_CALLS])
async def test_an_illegal_transition_raises_and_changes_nothing(
    store: JobStore, engine: AsyncEngine, method: str, state: State
) -> None:
    job_id = await add(store)
    # the row really is in `state`, so only the state machine can refuse
    await set_columns(engine, job_id, state=state.value, lease_owner="someone")
    job = await get(store, job_id)
    with pytest.raises(IllegalTransition) as raised:
        await call_transition(store, method, job)
    assert raised.value.current is state
    assert await get(store, job_id) == job
    assert await store.events(job_id) == []


@pytest.mark.parametrize(
    ("method", "state"), ILLEGAL_CALLS[:4], ids=[f"{m}-from-{s.value}" for m, s in ILLEGAL_CALLS[:4]]
)
async def test_an_illegal_transition_raises_before_touching_the_database(
    tmp_path: Path, method: str, state: State
) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'tunekeeper.db'}")  # cannot even connect
    try:
        job = Job(**{field.name: None for field in dataclasses.fields(Job)})  # type: ignore[arg-type]
        job = dataclasses.replace(job, id=1, state=state, attempts=1, cancel_requested=False)
        with pytest.raises(IllegalTransition):
            await call_transition(JobStore(engine, clock=Clock()), method, job)
    finally:
        await engine.dispose()


async def test_the_observer_hears_each_transition(engine: AsyncEngine, clock: Clock) -> None:
    heard: list[tuple[str, str, str]] = []

    class Recorder:
        def transition(self, name: str, from_state: str, to_state: str) -> None:
            heard.append((name, from_state, to_state))

    store = JobStore(engine, clock=clock, observer=Recorder())
    job = await tuning_job(store)
    assert not await store.mark_submit_failed(dataclasses.replace(job, state=State.SUBMITTING), error="stale")
    assert await store.mark_tuning_failed(job, error="bad")
    assert heard == [
        ("claimed", "queued", "submitting"),
        ("accepted", "submitting", "tuning"),
        ("tuning_failed", "tuning", "failed"),
    ]


# ---- leases on submissions ---------------------------------------------------------------------------------


async def test_a_renewal_that_arrives_after_the_outcome_leaves_the_job_alone(store: JobStore, clock: Clock) -> None:
    job = await claim_one(store, await add(store))
    accepted = await accept(store, job)
    before = accepted.lease_expires_at
    clock.advance(30)
    await store.renew_leases("dispatcher-a", [job.id], LEASE)
    assert (await get(store, job.id)).lease_expires_at == before


async def test_renew_and_release_submission_leases(store: JobStore, clock: Clock) -> None:
    mine, theirs = await add(store, "mine", priority=1), await add(store, "theirs")
    await claim_one(store, mine, "dispatcher-a")
    await claim_one(store, theirs, "dispatcher-b")
    clock.advance(30)
    await store.renew_leases("dispatcher-a", [mine, theirs], LEASE)
    assert (await get(store, mine)).lease_expires_at == clock.now + timedelta(seconds=LEASE)
    assert (await get(store, theirs)).lease_expires_at == T0 + timedelta(seconds=LEASE), "not ours to renew"
    await store.renew_leases("dispatcher-a", [], LEASE)

    assert await store.release_leases("dispatcher-a") == 1
    assert (await get(store, mine)).lease_expires_at == clock.now
    clock.advance(delta=TICK)
    assert await claim_ids(store, "dispatcher-c") == [mine]


# ---- polling ------------------------------------------------------------------------------------------------


async def test_claim_due_polls_takes_due_tuning_jobs_and_pushes_them_a_lease_ahead(
    store: JobStore, clock: Clock
) -> None:
    due = await tuning_job(store, "due")  # accepted at T0: next_poll_at = T0
    later = await tuning_job(store, "later")
    assert await store.record_progress(
        later, {"completed_steps": 1}, next_poll_at=T0 + timedelta(seconds=100), event=None
    )
    cancelled = await tuning_job(store, "cancel me")
    await store.request_cancel(cancelled.id)
    await add(store, "queued")

    assert [job.id for job in await store.claim_due_polls(limit=10, lease_seconds=30)] == [due.id]
    assert (await get(store, due.id)).next_poll_at == T0 + timedelta(seconds=30)
    assert await store.claim_due_polls(limit=10, lease_seconds=30) == [], "claimed polls are not due again at once"

    clock.now = T0 + timedelta(seconds=30)  # the poller that took it never recorded a result
    assert [job.id for job in await store.claim_due_polls(limit=10, lease_seconds=30)] == [due.id]
    clock.now = T0 + timedelta(seconds=100)  # due is due again at +60, later at +100: oldest first
    assert [job.id for job in await store.claim_due_polls(limit=1, lease_seconds=30)] == [due.id]
    assert [job.id for job in await store.claim_due_polls(limit=1, lease_seconds=30)] == [later.id]
    assert await store.claim_due_polls(limit=5, lease_seconds=30) == []
    assert (await get(store, cancelled.id)).next_poll_at == T0, "a job being cancelled is not polled"
    assert await history(store, due.id) == [
        ("claimed", State.QUEUED, State.SUBMITTING),
        ("accepted", State.SUBMITTING, State.TUNING),
    ], "claiming a poll is not an event"


async def test_record_progress(store: JobStore, clock: Clock) -> None:
    job = await tuning_job(store)
    count = await event_count(store, job.id)
    clock.advance(20)
    progress = {
        "completed_steps": 3,
        "progress_percent": 30.0,
        "mean_loss": 1.5,
        "snapshots": [{"step": 3, "meanLoss": 1.5}],
        "anchor_at": clock.now,
        "anchor_steps": 3,
        "progress_changed_at": clock.now,
    }
    next_poll = clock.now + timedelta(seconds=45)
    assert await store.record_progress(job, progress, next_poll_at=next_poll, event=None)
    stored = await get(store, job.id)
    assert (stored.completed_steps, stored.progress_percent, stored.mean_loss) == (3, 30.0, 1.5)
    assert stored.snapshots == [{"step": 3, "meanLoss": 1.5}]
    assert (stored.anchor_at, stored.anchor_steps, stored.progress_changed_at) == (clock.now, 3, clock.now)
    assert (stored.next_poll_at, stored.last_polled_at, stored.updated_at) == (next_poll, clock.now, clock.now)
    assert stored.state is State.TUNING
    assert await event_count(store, job.id) == count, "no event unless asked"

    clock.advance(45)
    assert await store.record_progress(
        job, {"completed_steps": 5}, next_poll_at=clock.now, event={"percent": 50.0, "step": 5}
    )
    events = await store.events(job.id)
    assert len(events) == count + 1
    assert (events[-1].kind, events[-1].from_state, events[-1].to_state) == ("progress", None, None)
    assert events[-1].detail == {"percent": 50.0, "step": 5}
    assert events[-1].at == clock.now

    assert await store.mark_succeeded(job, model={}, wants_eval=False)
    finished = await get(store, job.id)
    assert not await store.record_progress(job, {"completed_steps": 9}, next_poll_at=clock.now, event={"x": 1})
    assert await get(store, job.id) == finished
    assert await event_count(store, job.id) == count + 2


# ---- cancellation --------------------------------------------------------------------------------------------


async def test_request_cancel_outcomes(store: JobStore, engine: AsyncEngine) -> None:
    queued, tuning, done, stopping = [await add(store, name) for name in ("q", "t", "d", "c")]
    await set_columns(engine, tuning, state=State.TUNING.value)
    await set_columns(engine, done, state=State.SUCCEEDED.value)
    await set_columns(engine, stopping, state=State.CANCELLING.value)

    assert await store.request_cancel(queued) == (CancelOutcome.REQUESTED, State.QUEUED)
    assert await store.request_cancel(queued) == (CancelOutcome.ALREADY_REQUESTED, State.QUEUED)
    assert await store.request_cancel(tuning) == (CancelOutcome.REQUESTED, State.TUNING)
    assert await store.request_cancel(done) == (CancelOutcome.FINISHED, State.SUCCEEDED)
    # not cancellable any more; the CLI tells "already being cancelled" apart by the state
    assert await store.request_cancel(stopping) == (CancelOutcome.FINISHED, State.CANCELLING)
    assert await store.request_cancel(stopping + 100) == (CancelOutcome.NOT_FOUND, None)
    flags = {job.id: job.cancel_requested for job in await store.list_jobs()}
    assert flags == {queued: True, tuning: True, done: False, stopping: False}


async def test_cancel_queued(store: JobStore, clock: Clock) -> None:
    a, b, c = await add(store, "a"), await add(store, "b"), await add(store, "c")
    await store.request_cancel(a)
    await store.request_cancel(c)
    clock.advance(2)
    assert [job.id for job in await store.cancel_queued()] == [a, c]
    for job_id in (a, c):
        job = await get(store, job_id)
        assert (job.state, job.finished_at, job.updated_at) == (State.CANCELLED, clock.now, clock.now)
        assert job.cancel_requested is False, "the request is carried out"
        assert await history(store, job_id) == [("cancelled", State.QUEUED, State.CANCELLED)]
    assert (await get(store, b)).state is State.QUEUED
    assert await store.cancel_queued() == []
    assert await store.events(b) == []


async def test_a_queued_job_sent_before_is_cancelled_through_the_canceller(store: JobStore, clock: Clock) -> None:
    # its create may have landed with the answer lost: only the canceller can clean up on the service
    job_id = await add(store, "retrying")
    job = await claim_one(store, job_id, "dispatcher-a")
    assert await store.schedule_retry(job, error="UNAVAILABLE (503): lost", retry_at=T0 + timedelta(hours=1))
    await store.request_cancel(job_id)
    assert await store.cancel_queued() == []
    claimed = await store.claim_cancellations("canceller-a", limit=10, lease_seconds=LEASE)
    assert [job.id for job in claimed] == [job_id]
    assert (await history(store, job_id))[-1] == ("cancel_started", State.QUEUED, State.CANCELLING)


async def test_claim_cancellations(store: JobStore, clock: Clock) -> None:
    tuning = await tuning_job(store, "tuning")
    untouched = await tuning_job(store, "untouched")
    submitting_id = await add(store, "submitting")
    await claim_one(store, submitting_id, "dispatcher-a")
    for job_id in (tuning.id, submitting_id):
        assert (await store.request_cancel(job_id))[0] is CancelOutcome.REQUESTED

    # the tuning job at once; the submission only once its submitter's lease has run out
    claimed = await store.claim_cancellations("canceller-a", limit=10, lease_seconds=LEASE)
    assert [job.id for job in claimed] == [tuning.id]
    assert claimed[0].state is State.CANCELLING
    assert claimed[0].lease_owner == "canceller-a"
    stored = await get(store, tuning.id)
    assert (stored.state, stored.lease_owner, stored.next_poll_at) == (State.CANCELLING, "canceller-a", None)
    assert stored.lease_expires_at == T0 + timedelta(seconds=LEASE)
    assert (await history(store, tuning.id))[-1] == ("cancel_started", State.TUNING, State.CANCELLING)
    assert (await get(store, untouched.id)).state is State.TUNING

    clock.advance(LEASE)  # both leases end now, neither has expired yet
    assert await store.claim_cancellations("canceller-b", limit=10, lease_seconds=LEASE) == []
    clock.advance(delta=TICK)
    # the dead canceller's job is re-claimed (no new event), and the dead submitter's job starts cancelling
    count = await event_count(store, tuning.id)
    claimed = await store.claim_cancellations("canceller-b", limit=1, lease_seconds=LEASE)
    assert [job.id for job in claimed] == [tuning.id], "limit respected, lowest id first"
    assert await event_count(store, tuning.id) == count
    assert (await get(store, tuning.id)).lease_owner == "canceller-b"
    claimed = await store.claim_cancellations("canceller-b", limit=10, lease_seconds=LEASE)
    assert [job.id for job in claimed] == [submitting_id]
    assert (claimed[0].state, claimed[0].lease_owner) == (State.CANCELLING, "canceller-b")
    assert (await history(store, submitting_id))[-1] == ("cancel_started", State.SUBMITTING, State.CANCELLING)
    assert await store.claim_cancellations("canceller-c", limit=10, lease_seconds=LEASE) == []
    # a cancelling job still holds its tuning slot
    assert await store.count_by_state() == {State.CANCELLING: 2, State.TUNING: 1}


async def test_ignore_late_cancels(store: JobStore, engine: AsyncEngine) -> None:
    finished = await tuning_job(store, "finished")
    assert await store.mark_succeeded(finished, model={}, wants_eval=False)
    waiting = await add(store, "waiting")
    await store.request_cancel(waiting)
    count = await event_count(store, finished.id)
    # the request arrived after the job finished (a producer's UPDATE raced the daemon)
    await run_sql(engine, "UPDATE tuning_jobs SET cancel_requested = TRUE WHERE id = :id", id=finished.id)

    assert [job.id for job in await store.ignore_late_cancels()] == [finished.id]
    assert (await get(store, finished.id)).cancel_requested is False
    events = await store.events(finished.id)
    assert len(events) == count + 1
    assert (events[-1].kind, events[-1].from_state, events[-1].to_state) == ("cancel_ignored", None, None)
    assert events[-1].detail == {"state": "succeeded"}
    assert await store.ignore_late_cancels() == []
    assert await event_count(store, finished.id) == count + 1, "recorded once"
    assert (await get(store, waiting)).cancel_requested is True, "a pending request is not late"


async def test_jobs_cancelled_on_request_are_not_late_cancels(store: JobStore) -> None:
    """The canceller runs cancel_queued and then ignore_late_cancels in one pass: a job cancelled because of its
    request must not then be told that the request was ignored."""
    tuning = await tuning_job(store, "tuning")
    queued = await add(store, "queued")
    for job_id in (queued, tuning.id):
        await store.request_cancel(job_id)
    await store.cancel_queued()
    [cancelling] = await store.claim_cancellations("canceller", limit=5, lease_seconds=LEASE)
    assert await store.mark_cancelled(cancelling, model_deleted=False)
    assert await store.ignore_late_cancels() == []
    for job_id in (queued, tuning.id):
        assert "cancel_ignored" not in [kind for kind, _, _ in await history(store, job_id)]
        assert (await get(store, job_id)).state is State.CANCELLED
        assert (await store.request_cancel(job_id))[0] is CancelOutcome.FINISHED


# ---- purging ------------------------------------------------------------------------------------------------

RULES = PurgeRules(cancelled_after=timedelta(hours=1), failed_after=timedelta(hours=2), max_age=timedelta(days=30))
SECOND = timedelta(seconds=1)


async def finished_job(
    store: JobStore, state: State, finished_at: datetime | None, *, attempts: int = 1, **columns: Any
) -> int:
    job_id = await add(store, f"{state.value} job")
    values = {
        "state": state.value,
        "attempts": attempts,
        "tuned_model_id": f"model-{job_id}",
        "finished_at": finished_at,
    }
    await set_columns(store.engine, job_id, **(values | columns))
    return job_id


async def test_purge_candidates_by_policy_at_the_window_edges(store: JobStore, engine: AsyncEngine) -> None:
    expected: dict[int, PurgePolicy] = {}
    s = store
    expected[await finished_job(s, State.CANCELLED, T0 - RULES.cancelled_after)] = PurgePolicy.CANCELLED
    await finished_job(s, State.CANCELLED, T0 - RULES.cancelled_after + SECOND)
    expected[await finished_job(s, State.FAILED, T0 - RULES.failed_after)] = PurgePolicy.FAILED
    await finished_job(s, State.FAILED, T0 - RULES.failed_after + SECOND)
    expected[await finished_job(s, State.SUCCEEDED, T0 - SECOND, keep_until=T0)] = PurgePolicy.KEEP_UNTIL
    expected[await finished_job(s, State.SUCCEEDED, T0 - SECOND, keep_until=T0 - SECOND)] = PurgePolicy.KEEP_UNTIL
    await finished_job(s, State.SUCCEEDED, T0 - SECOND, keep_until=T0 + SECOND)
    assert RULES.max_age is not None
    expected[await finished_job(s, State.SUCCEEDED, T0 - RULES.max_age)] = PurgePolicy.MAX_AGE
    await finished_job(s, State.SUCCEEDED, T0 - RULES.max_age + SECOND)
    # never candidates: no create was ever sent, the model is known gone, no model, not finished, no policy
    await finished_job(s, State.CANCELLED, T0 - timedelta(days=100), attempts=0)
    await finished_job(s, State.FAILED, T0 - timedelta(days=100), purged_at=T0 - timedelta(days=99))
    await finished_job(s, State.SUCCEEDED, T0 - timedelta(days=100), tuned_model_id=None)
    await finished_job(s, State.TUNING, None, keep_until=T0 - timedelta(days=1))
    await finished_job(s, State.TUNING, T0 - timedelta(days=100))
    await finished_job(s, State.INVALID, T0 - timedelta(days=100))
    await finished_job(s, State.SUCCEEDED, T0 - timedelta(days=29))

    candidates = await store.purge_candidates(RULES, limit=100)
    assert {c.job.id: c.policy for c in candidates} == expected
    finishes = [(c.job.finished_at, c.job.id) for c in candidates]
    assert finishes == sorted(finishes), "oldest finish first"

    without_max_age = dataclasses.replace(RULES, max_age=None)
    assert PurgePolicy.MAX_AGE not in {c.policy for c in await store.purge_candidates(without_max_age, limit=100)}


async def test_purge_candidates_limit_takes_the_oldest(store: JobStore) -> None:
    oldest = await finished_job(store, State.FAILED, T0 - timedelta(days=9))
    middle = await finished_job(store, State.CANCELLED, T0 - timedelta(days=8))
    await finished_job(store, State.SUCCEEDED, T0 - timedelta(days=7), keep_until=T0 - timedelta(days=1))
    await finished_job(store, State.FAILED, T0 - timedelta(days=6))
    assert [c.job.id for c in await store.purge_candidates(RULES, limit=2)] == [oldest, middle]
    assert len(await store.purge_candidates(RULES, limit=10)) == 4


@pytest.mark.parametrize(
    ("keep_until_text", "is_candidate"),
    [
        ("2025-03-01T11:59:59Z", True),
        ("2025-03-01T12:00:00Z", True),
        ("2025-03-01T12:00:01Z", False),
        ("2025-03-01T13:59:59+02:00", True),  # 11:59:59 UTC
        ("2025-03-01T11:00:01-01:00", False),  # 12:00:01 UTC
        ("2025-03-01 11:59:59", True),  # CURRENT_TIMESTAMP's form
        ("2025-02-28", True),
    ],
)
async def test_keep_until_written_by_a_producer_as_iso_text(
    store: JobStore, engine: AsyncEngine, keep_until_text: str, is_candidate: bool
) -> None:
    job_id = await finished_job(store, State.SUCCEEDED, T0 - timedelta(days=1))
    async with engine.begin() as conn:
        if store.is_postgres:  # PostgreSQL reads text without an offset in the session's time zone
            await conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
        await conn.execute(sa.text(f"UPDATE tuning_jobs SET keep_until = '{keep_until_text}' WHERE id = {job_id}"))
    keep_until = (await get(store, job_id)).keep_until
    assert keep_until is not None
    assert keep_until.utcoffset() == timedelta(0)
    assert (keep_until <= T0) is is_candidate
    candidates = await store.purge_candidates(RULES, limit=10)
    assert [(c.job.id, c.policy) for c in candidates] == ([(job_id, PurgePolicy.KEEP_UNTIL)] if is_candidate else [])


# The contract's one keep_until form: ISO 8601 date and time ('T' or a space between), seconds and their fraction
# optional, and a UTC offset ('Z' or +HH:MM), which both databases read as the same instant whatever the
# producer's session time zone.
DOCUMENTED_KEEP_UNTIL = [
    ("2025-03-01T12:00:00Z", datetime(2025, 3, 1, 12, tzinfo=UTC)),
    ("2025-03-01 12:00Z", datetime(2025, 3, 1, 12, tzinfo=UTC)),
    ("2025-03-01T14:00:00.250+02:00", datetime(2025, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)),
    ("2025-03-01T06:30:00-05:30", datetime(2025, 3, 1, 12, tzinfo=UTC)),
]


@pytest.mark.parametrize(("text", "instant"), DOCUMENTED_KEEP_UNTIL)
async def test_the_documented_keep_until_form_is_one_instant_on_both_databases(
    store: JobStore, engine: AsyncEngine, text: str, instant: datetime
) -> None:
    assert "2027-01-05T10:00:00Z" in README_CONTRACT, "the contract shows the form"
    job_id = await finished_job(store, State.SUCCEEDED, T0 - timedelta(days=1))
    async with engine.begin() as conn:
        if store.is_postgres:  # a producer whose session is not in UTC: the offset decides, not the session
            await conn.execute(sa.text("SET LOCAL TIME ZONE 'America/New_York'"))
        await conn.execute(sa.text(f"UPDATE tuning_jobs SET keep_until = '{text}' WHERE id = {job_id}"))
    assert (await get(store, job_id)).keep_until == instant


async def test_a_purged_job_is_no_longer_a_candidate(store: JobStore) -> None:
    job_id = await finished_job(store, State.FAILED, T0 - timedelta(days=1), tuned_model_name="tunedModels/f")
    [candidate] = await store.purge_candidates(RULES, limit=10)
    assert candidate.model_name == "tunedModels/f"
    assert await store.mark_purged(candidate)
    assert await history(store, job_id) == [("purged", None, None)]
    assert (await get(store, job_id)).state is State.FAILED
    assert await store.purge_candidates(RULES, limit=10) == []


async def test_a_cancelled_job_whose_model_was_deleted_is_not_a_candidate(store: JobStore, clock: Clock) -> None:
    job = await tuning_job(store)
    await store.request_cancel(job.id)
    [cancelling] = await store.claim_cancellations("canceller", limit=5, lease_seconds=LEASE)
    assert await store.mark_cancelled(cancelling, model_deleted=True)
    clock.advance(delta=timedelta(days=10))
    assert await store.purge_candidates(RULES, limit=10) == []


# ---- named leases -------------------------------------------------------------------------------------------


async def lease_row(engine: AsyncEngine, name: str) -> tuple[str | None, datetime | None] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(leases.c.owner, leases.c.expires_at).where(leases.c.name == name))).first()
    return None if row is None else (row.owner, row.expires_at)


async def test_named_lease_is_exclusive_reentrant_and_expires(
    store: JobStore, engine: AsyncEngine, clock: Clock
) -> None:
    assert await store.take_lease("purger", "a", 60)
    assert await lease_row(engine, "purger") == ("a", T0 + timedelta(seconds=60))
    assert not await store.take_lease("purger", "b", 60)
    assert await store.take_lease("other", "b", 60), "leases are independent by name"

    clock.advance(30)
    assert await store.take_lease("purger", "a", 60), "the holder renews"
    assert await lease_row(engine, "purger") == ("a", clock.now + timedelta(seconds=60))
    clock.advance(60)  # ends now: still held
    assert not await store.take_lease("purger", "b", 60)
    clock.advance(delta=TICK)
    assert await store.take_lease("purger", "b", 60), "an expired lease is taken over"
    assert not await store.take_lease("purger", "a", 60)
    assert await lease_row(engine, "purger") == ("b", clock.now + timedelta(seconds=60))


async def test_release_lease(store: JobStore, engine: AsyncEngine) -> None:
    assert await store.take_lease("purger", "a", 600)
    await store.release_lease("purger", "b")
    assert not await store.take_lease("purger", "b", 600), "only the holder releases"
    await store.release_lease("purger", "a")
    assert await lease_row(engine, "purger") == (None, None)
    assert await store.take_lease("purger", "b", 600)
    await store.release_lease("never-taken", "a")
    assert await lease_row(engine, "never-taken") is None


async def test_named_lease_taken_by_exactly_one_of_many_at_once(database_url: str) -> None:
    engines = [make_engine(database_url, pool_size=1) for _ in range(6)]
    try:
        stores = [JobStore(engine) for engine in engines]
        for round_ in range(3):
            taken = await asyncio.gather(*(s.take_lease(f"purger-{round_}", f"r{n}", 60) for n, s in enumerate(stores)))
            assert sum(taken) == 1, taken
            row = await lease_row(engines[0], f"purger-{round_}")
            assert row is not None
            assert row[0] == f"r{taken.index(True)}"
    finally:
        await asyncio.gather(*(engine.dispose() for engine in engines))


# ---- evaluation, copies, due times ---------------------------------------------------------------------------


async def test_claim_pending_evals_and_record_eval(store: JobStore, clock: Clock) -> None:
    evaluated = await tuning_job(store, "evaluated", eval_data=PAIRS)
    plain = await tuning_job(store, "plain")
    running = await tuning_job(store, "running")
    assert await store.mark_succeeded(evaluated, model={}, wants_eval=True)
    assert await store.mark_succeeded(plain, model={}, wants_eval=False)
    assert (await get(store, evaluated.id)).next_poll_at == T0

    [claimed] = await store.claim_pending_evals(limit=10, lease_seconds=120)
    assert claimed.id == evaluated.id
    assert claimed.eval_data == PAIRS
    assert (await get(store, evaluated.id)).next_poll_at == T0 + timedelta(seconds=120)
    assert await store.claim_pending_evals(limit=10, lease_seconds=120) == []
    clock.advance(120)  # the evaluator died: it is due again
    assert [job.id for job in await store.claim_pending_evals(limit=10, lease_seconds=120)] == [evaluated.id]

    count = await event_count(store, evaluated.id)
    results = [{"input": "1", "expected": "2", "output": "2", "match": True}, {"input": "3", "match": False}]
    await store.record_eval(claimed, results=results, score=0.5, error=None)
    stored = await get(store, evaluated.id)
    assert (stored.eval_results, stored.eval_score, stored.next_poll_at) == (results, 0.5, None)
    assert stored.state is State.SUCCEEDED
    events = await store.events(evaluated.id)
    assert len(events) == count + 1
    assert (events[-1].kind, events[-1].detail) == ("evaluated", {"score": 0.5, "examples": 2})
    clock.advance(10_000)
    assert await store.claim_pending_evals(limit=10, lease_seconds=120) == []
    assert running.state is State.TUNING


async def test_record_eval_failure(store: JobStore) -> None:
    job = await tuning_job(store, eval_data=PAIRS)
    assert await store.mark_succeeded(job, model={}, wants_eval=True)
    [claimed] = await store.claim_pending_evals(limit=1, lease_seconds=60)
    await store.record_eval(claimed, results=None, score=None, error="model not found")
    stored = await get(store, job.id)
    assert (stored.eval_results, stored.eval_score, stored.next_poll_at) == (None, None, None)
    event = (await store.events(job.id))[-1]
    assert (event.kind, event.detail) == ("eval_failed", {"score": None, "examples": 0, "error": "model not found"})


async def test_copy_job(store: JobStore, engine: AsyncEngine) -> None:
    keep = T0 + timedelta(days=2)
    original = await add(
        store,
        "number generator",
        base_model="models/b",
        epoch_count=3,
        batch_size=2,
        learning_rate=0.01,
        learning_rate_multiplier=2.0,
        tuned_model_id="explicit-id",
        priority=4,
        labels={"k": "v"},
        keep_until=keep,
        eval_data=PAIRS,
        training_file=None,
    )
    await set_columns(engine, original, state=State.FAILED.value, attempts=3, last_error="boom", cancel_requested=True)
    copy = await store.copy_job(original)
    assert copy is not None
    assert copy != original
    old, new = await get(store, original), await get(store, copy)
    request = ["display_name", "training_data", "training_file", "base_model", "epoch_count", "batch_size"]
    request += ["learning_rate", "learning_rate_multiplier", "priority", "labels", "keep_until", "eval_data"]
    assert {name: getattr(new, name) for name in request} == {name: getattr(old, name) for name in request}
    assert new.state is State.QUEUED
    assert (new.attempts, new.tuned_model_id, new.last_error, new.cancel_requested) == (0, None, None, False)
    assert await store.events(copy) == []
    [event] = await store.events(original)
    assert (event.kind, event.detail) == ("retried_as", {"new_job_id": copy})
    assert old.state is State.FAILED
    [claimed] = await claim(store)
    assert claimed.tuned_model_id == f"number-generator-{copy}"

    assert await store.copy_job(copy + 100) is None
    assert await store.events(copy + 100) == []


async def test_next_submission_due(store: JobStore, clock: Clock) -> None:
    assert await store.next_submission_due() is None
    queued = await add(store, "queued")
    assert await store.next_submission_due() is None, "a job due at once has no future due time"

    job = await claim_one(store, queued)
    assert await store.next_submission_due() == T0 + timedelta(seconds=LEASE), "the submitter's lease expiry"
    retry_at = T0 + timedelta(seconds=300)
    assert await store.schedule_retry(job, error="503", retry_at=retry_at)
    due = await store.next_submission_due()
    assert due == retry_at
    assert due is not None
    assert due.utcoffset() == timedelta(0)
    other = await add(store, "other")
    await claim_one(store, other)
    assert await store.next_submission_due() == T0 + timedelta(seconds=LEASE), "the earlier of retry and lease"
    await store.request_cancel(queued)
    assert await store.next_submission_due() == T0 + timedelta(seconds=LEASE)


async def test_next_poll_due(store: JobStore, clock: Clock) -> None:
    assert await store.next_poll_due() is None
    first = await tuning_job(store, "first")  # next_poll_at = T0
    assert await store.record_progress(first, {}, next_poll_at=T0 + timedelta(seconds=90), event=None)
    clock.advance(10)
    second = await tuning_job(store, "second")  # next_poll_at = T0 + 10s
    due = await store.next_poll_due()
    assert due == T0 + timedelta(seconds=10)
    assert due is not None
    assert due.utcoffset() == timedelta(0)
    # a job whose cancel was requested is not polled, nor is a finished one waiting for its evaluation
    await store.request_cancel(second.id)
    assert await store.next_poll_due() == T0 + timedelta(seconds=90)
    assert await store.mark_succeeded(first, model={}, wants_eval=True)
    assert await store.next_poll_due() is None


async def test_record_event_and_events_without_a_job(store: JobStore) -> None:
    await store.record_event(None, "orphan_purged", {"tuned_model": "tunedModels/x"})
    [event] = await store.events(None)
    assert (event.job_id, event.kind, event.detail, event.at) == (
        None,
        "orphan_purged",
        {"tuned_model": "tunedModels/x"},
        T0,
    )


async def test_model_ids_with_jobs(store: JobStore) -> None:
    await add(store, "a", tuned_model_id="model-a")
    await add(store, "b")
    assert await store.model_ids_with_jobs(["model-a", "model-b", "tk-orphan-1"]) == {"model-a"}
    assert await store.model_ids_with_jobs([]) == set()


async def test_ping(store: JobStore) -> None:
    await store.ping()


# ---- group commit: concurrent writes share transactions --------------------------------------------------


def count_commits(engine: AsyncEngine) -> list[int]:
    commits = [0]

    def on_commit(_connection: object) -> None:
        commits[0] += 1

    sa.event.listen(engine.sync_engine, "commit", on_commit)
    return commits


async def test_concurrent_transitions_share_transactions(store: JobStore, engine: AsyncEngine) -> None:
    jobs = [await tuning_job(store, f"job {n}") for n in range(9)]  # the claim helper allows 10 active
    commits = count_commits(engine)
    model = {"tuned_model_name": "tunedModels/m", "progress_percent": 100.0}
    results = await asyncio.gather(*(store.mark_succeeded(job, model=model, wants_eval=False) for job in jobs))
    assert results == [True] * 9
    assert commits[0] <= 3, f"9 concurrent transitions took {commits[0]} transactions"
    for job in jobs:
        assert (await get(store, job.id)).state == State.SUCCEEDED
        assert (await history(store, job.id))[-1] == ("succeeded", State.TUNING, State.SUCCEEDED)


async def test_in_a_shared_transaction_a_stale_guard_skips_only_its_own_change(store: JobStore) -> None:
    ahead = await tuning_job(store, "written alone first")
    first = await tuning_job(store, "first")
    second = await tuning_job(store, "second")
    stale = dataclasses.replace(second, state=State.SUBMITTING, lease_owner="dispatcher-a")
    results = await asyncio.gather(
        store.mark_tuning_failed(ahead, error="boom"),
        store.mark_tuning_failed(first, error="boom"),
        store.mark_accepted(stale, operation_name="op", tuned_model_name="m", total_steps=1, adopted=False),
        store.mark_tuning_failed(second, error="boom"),
    )
    assert results == [True, True, False, True]
    assert (await get(store, second.id)).state == State.FAILED
    assert [kind for kind, _, _ in await history(store, second.id)] == ["claimed", "accepted", "tuning_failed"]


async def test_two_changes_to_one_job_in_a_shared_transaction_apply_in_order(store: JobStore, clock: Clock) -> None:
    ahead = await tuning_job(store, "written alone first")
    job = await tuning_job(store)
    next_poll = clock.now + timedelta(seconds=30)
    results = await asyncio.gather(
        store.record_progress(ahead, {"completed_steps": 1}, next_poll_at=next_poll, event=None),
        store.record_progress(job, {"completed_steps": 5}, next_poll_at=next_poll, event={"epoch": 1}),
        store.mark_succeeded(job, model={"completed_steps": 10}, wants_eval=False),
        store.record_progress(job, {"completed_steps": 7}, next_poll_at=next_poll, event=None),
        store.mark_tuning_failed(job, error="too late"),
    )
    assert results == [True, True, True, False, False]
    stored = await get(store, job.id)
    assert (stored.state, stored.completed_steps, stored.next_poll_at) == (State.SUCCEEDED, 10, None)
    assert [kind for kind, _, _ in await history(store, job.id)] == ["claimed", "accepted", "progress", "succeeded"]


async def test_a_change_that_cannot_be_written_fails_alone(store: JobStore) -> None:
    ahead = await tuning_job(store, "written alone first")
    good = await tuning_job(store, "good")
    bad = await tuning_job(store, "bad")
    next_poll = T0 + timedelta(seconds=30)
    results = await asyncio.gather(
        store.record_progress(ahead, {"completed_steps": 1}, next_poll_at=next_poll, event=None),
        store.record_progress(bad, {"snapshots": {"not", "json"}}, next_poll_at=next_poll, event=None),
        store.mark_tuning_failed(good, error="boom"),
        return_exceptions=True,
    )
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], sa.exc.StatementError), results[1]
    assert (await get(store, good.id)).state == State.FAILED
    assert (await get(store, bad.id)).snapshots is None


async def test_cancel_work_pending_while_a_request_or_a_cancellation_is_outstanding(store: JobStore) -> None:
    assert not await store.cancel_work_pending()
    job = await tuning_job(store)
    assert not await store.cancel_work_pending()
    await store.request_cancel(job.id)
    assert await store.cancel_work_pending()
    [taken] = await store.claim_cancellations("canceller-a", limit=5, lease_seconds=LEASE)
    assert taken.state == State.CANCELLING
    assert await store.cancel_work_pending()
    assert await store.mark_cancelled(taken, model_deleted=True)
    assert not await store.cancel_work_pending()


async def test_a_failure_is_announced_as_a_warning_and_other_changes_as_info(store: JobStore) -> None:
    failing, retried = await add(store, "fails"), await add(store, "retried")
    with capture_logs() as logs:
        await store.mark_submit_failed(await claim_one(store, failing), error="400 bad request")
        job = await claim_one(store, retried)
        await store.schedule_retry(job, error="503", retry_at=store.clock())
    levels = {(entry["job_id"], entry["to_state"]): entry["log_level"] for entry in logs}
    assert levels == {
        (failing, "submitting"): "info",
        (failing, "failed"): "warning",
        (retried, "submitting"): "info",
        (retried, "queued"): "info",
    }


# ---- changes made under the daemon by someone else ----


async def test_a_row_deleted_under_its_handler_is_a_warning(store: JobStore, engine: AsyncEngine) -> None:
    polled = await tuning_job(store, "polled")
    finishing = await tuning_job(store, "finishing")
    await run_sql(engine, "DELETE FROM tuning_jobs WHERE id IN (:a, :b)", a=polled.id, b=finishing.id)
    with capture_logs() as logs:
        assert not await store.record_progress(polled, {"progress_percent": 50.0}, next_poll_at=T0, event=None)
        assert not await store.mark_succeeded(finishing, model={}, wants_eval=False)
    gone = [(e["job_id"], e["transition"], e["expected"], e["log_level"]) for e in logs if e["event"] == "job_row_gone"]
    assert gone == [(polled.id, "progress", "tuning", "warning"), (finishing.id, "succeeded", "tuning", "warning")]


async def test_a_state_overwritten_by_a_producer_is_a_warning_and_one_a_daemon_wrote_is_not(
    store: JobStore, engine: AsyncEngine
) -> None:
    overwritten = await tuning_job(store, "overwritten")
    moved_on = await tuning_job(store, "cancelled by a canceller")
    await run_sql(engine, "UPDATE tuning_jobs SET state = 'queued' WHERE id = :id", id=overwritten.id)
    await store.request_cancel(moved_on.id)
    await store.claim_cancellations("canceller", limit=5, lease_seconds=LEASE)  # a daemon's change: recorded
    with capture_logs() as logs:
        assert not await store.mark_succeeded(overwritten, model={}, wants_eval=False)
        assert not await store.mark_succeeded(moved_on, model={}, wants_eval=False)
        assert not await store.record_progress(overwritten, {"progress_percent": 50.0}, next_poll_at=T0, event=None)
    warned = [
        (e["job_id"], e["transition"], e["found"], e["recorded"]) for e in logs if e["event"] == "job_state_overwritten"
    ]
    assert warned == [
        (overwritten.id, "succeeded", "queued", "tuning"),
        (overwritten.id, "progress", "queued", "tuning"),
    ]
    skipped = [(e["job_id"], e["log_level"]) for e in logs if e["event"] == "transition_skipped"]
    assert skipped == [(overwritten.id, "info"), (moved_on.id, "info")]
    assert (await get(store, overwritten.id)).state is State.QUEUED  # nothing written


LARGE_COLUMN = re.compile(r"tuning_jobs\.(training_data|eval_data|eval_results)\b")
NOT_LISTED = re.compile(r"tuning_jobs\.(training_data|eval_data|eval_results|snapshots)\b")


@contextlib.contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL the engine sends while the block runs."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_a_listing_reads_only_the_columns_it_shows(store: JobStore) -> None:
    job_id = await store.add_job(NewJob(display_name="listed", training_data=PAIRS, eval_data=PAIRS))
    with statements(store.engine) as sent:
        [job] = await store.list_jobs(columns=SUMMARY_FIELDS)
    assert [statement for statement in sent if NOT_LISTED.search(statement)] == []
    assert (job.id, job.display_name, job.state, job.training_data, job.eval_data) == (
        job_id,
        "listed",
        State.QUEUED,
        None,
        None,
    )
    [whole] = await store.list_jobs()
    assert whole.training_data == PAIRS


async def test_a_claim_reads_the_training_data_only_after_its_commit(store: JobStore) -> None:
    await store.add_job(NewJob(display_name="claimed", training_data=PAIRS, eval_data=PAIRS))
    with statements(store.engine) as sent:
        [job] = await claim(store)
    assert (job.training_data, job.eval_data) == (PAIRS, PAIRS)
    claim_transaction = sent[: next(i for i, s in enumerate(sent) if s.startswith("INSERT INTO job_events")) + 1]
    assert any(s.startswith("UPDATE tuning_jobs") for s in claim_transaction)
    assert [s for s in claim_transaction if LARGE_COLUMN.search(s)] == []
