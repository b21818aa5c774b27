"""One hostile row fails its job alone: what a claim cannot load is set aside with a fixed message naming the
column, the other jobs are claimed as usual, and commands still show it. What the service returns is stored in
a form the database takes (NaN as null, NULs dropped), on both backends."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tunekeeper.cli import render
from tunekeeper.db.engine import make_engine
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.states import State, Transition

PAIRS = [{"text_input": "1", "output": "2"}]
# json_valid takes up to 2,000 levels on SQLite 3.40; jsonb takes 5,000 (Python's json.loads stops near 1,000)
DEPTH = {"sqlite": 1_500, "postgresql": 5_000}


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    engine = make_engine(database_url)
    yield JobStore(engine)
    await engine.dispose()


def deep_json(store: JobStore) -> str:
    depth = DEPTH[store.engine.dialect.name]
    return "[" * depth + "]" * depth


async def write_raw(store: JobStore, job_id: int, column: str, text: str) -> None:
    """Put JSON text into a column as a producer's plain SQL would, past the code's own serializer (and, on
    PostgreSQL, past the depth trigger of migration 0005: as a row written before it)."""
    value = "CAST(:value AS jsonb)" if store.is_postgres else ":value"
    async with store.engine.begin() as conn:
        if store.is_postgres:
            await conn.execute(sa.text("SET LOCAL session_replication_role = replica"))  # no triggers
        await conn.execute(
            sa.text(f"UPDATE tuning_jobs SET {column} = {value} WHERE id = :id"), {"value": text, "id": job_id}
        )


async def claim(store: JobStore) -> list[int]:
    claimed = await store.claim_for_submission("me", limit=10, max_active=10, lease_seconds=30)
    return [job.id for job in claimed]


async def test_a_row_nested_too_deep_is_made_invalid_alone_and_the_others_are_claimed(store: JobStore) -> None:
    deep = await store.add_job(NewJob(display_name="deep", training_data=PAIRS))
    await write_raw(store, deep, "labels", deep_json(store))
    good = await store.add_job(NewJob(display_name="good", training_data=PAIRS))

    assert await claim(store) == [good]

    job = await store.get_job(deep)
    assert job is not None
    assert job.state == State.INVALID
    assert job.last_error == "the row cannot be read: column labels holds a value of the wrong type or form"
    assert job.unreadable == "labels"
    events = await store.events(deep)
    assert [(e.kind, e.from_state, e.to_state) for e in events] == [
        (Transition.UNREADABLE, State.QUEUED, State.INVALID)
    ]
    assert events[0].detail == {"error": job.last_error, "column": "labels"}
    assert await claim(store) == []  # set aside once, never met again


async def test_a_tuning_row_whose_snapshots_cannot_be_read_leaves_the_poller_alone(store: JobStore) -> None:
    ids = [await store.add_job(NewJob(display_name=f"job {n}", training_data=PAIRS)) for n in range(2)]
    for job in await store.claim_for_submission("me", limit=10, max_active=10, lease_seconds=30):
        assert await store.mark_accepted(job, operation_name=None, tuned_model_name=None, total_steps=5, adopted=False)
    await write_raw(store, ids[0], "snapshots", deep_json(store))

    polled = await store.claim_due_polls(limit=10, lease_seconds=30)

    assert [job.id for job in polled] == [ids[1]]
    broken = await store.get_job(ids[0])
    assert broken is not None and broken.state == State.INVALID and broken.next_poll_at is None
    assert broken.last_error is not None and "column snapshots" in broken.last_error


async def test_values_the_database_refuses_are_stored_as_it_takes_them(store: JobStore) -> None:
    """A diverged run's NaN loss and a NUL in a service string: stored as null and without the NUL."""
    job_id = await store.add_job(NewJob(display_name="diverged", training_data=PAIRS))
    [job] = await store.claim_for_submission("me", limit=1, max_active=1, lease_seconds=30)
    assert await store.mark_accepted(
        job, operation_name="tunedModels/x\x00y/operations/1", tuned_model_name=None, total_steps=5, adopted=False
    )
    tuning = await store.get_job(job_id)
    assert tuning is not None
    snapshots = [{"step": 1, "meanLoss": math.nan, "epoch": 1}, {"step": 2, "meanLoss": math.inf, "note": "a\x00b"}]
    progress = {"mean_loss": math.nan, "snapshots": snapshots, "sub_state": "TUN\x00ING", "progress_percent": math.inf}
    recorded = await store.record_progress(
        tuning, progress, next_poll_at=store.clock(), event={"step": 1, "mean_loss": math.nan}
    )
    assert recorded
    await store.record_eval(
        tuning, results=[{"input": "1", "output": "2\x00", "match": False}], score=math.nan, error=None
    )

    stored = await store.get_job(job_id)
    assert stored is not None and stored.unreadable is None
    assert stored.operation_name == "tunedModels/xy/operations/1"
    assert stored.mean_loss is None and stored.progress_percent is None and stored.eval_score is None
    assert stored.sub_state == "TUNING"
    assert stored.snapshots == [{"step": 1, "meanLoss": None, "epoch": 1}, {"step": 2, "meanLoss": None, "note": "ab"}]
    assert stored.eval_results == [{"input": "1", "output": "2", "match": False}]
    progress_events = [e for e in await store.events(job_id) if e.kind == "progress"]
    assert progress_events[0].detail == {"step": 1, "mean_loss": None}
    # `show --json` prints strict JSON: no NaN anywhere
    printed = render.dumps(render.job_json(stored))
    json.loads(printed, parse_constant=lambda name: pytest.fail(f"show --json printed {name}"))


# ---- SQLite: text that is not UTF-8 -------------------------------------------------------------------------


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    assert database is not None
    return Path(database)


async def test_text_that_is_not_utf8_fails_its_row_alone_and_is_still_listed(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    store = JobStore(engine)
    try:
        with sqlite3.connect(sqlite_path(sqlite_url)) as db:
            db.execute(
                "INSERT INTO tuning_jobs (display_name, training_data) VALUES (CAST(x'41ff1b5b326a' AS TEXT), ?)",
                (json.dumps(PAIRS),),
            )
        bad = 1
        good = await store.add_job(NewJob(display_name="good", training_data=PAIRS))

        assert await claim(store) == [good]  # today the decode error reads as a lost database, for ever

        listed = {job.id: job for job in await store.list_jobs()}
        assert listed[bad].state == State.INVALID
        assert listed[bad].last_error == (
            "the row cannot be read: column display_name holds a value of the wrong type or form"
        )
        table = render.jobs_table(list(listed.values()), store.clock())
        assert "\x1b" not in table and "A\\udcff\\x1b[2j" in table
        render.dumps(render.job_json(listed[bad]))  # a lone surrogate must not crash `show --json`
    finally:
        await engine.dispose()


async def test_an_unreadable_finished_row_is_not_evaluated_again(database_url: str) -> None:
    engine = make_engine(database_url)
    store = JobStore(engine)
    try:
        job_id = await store.add_job(NewJob(display_name="done", training_data=PAIRS, eval_data=PAIRS))
        [job] = await store.claim_for_submission("me", limit=1, max_active=1, lease_seconds=30)
        await store.mark_accepted(job, operation_name=None, tuned_model_name=None, total_steps=1, adopted=False)
        tuning = await store.get_job(job_id)
        assert tuning is not None
        await store.mark_succeeded(tuning, model={}, wants_eval=True)
        await write_raw(store, job_id, "eval_data", deep_json(store))

        assert await store.claim_pending_evals(limit=5, lease_seconds=30) == []

        after = await store.get_job(job_id)
        assert after is not None and after.state == State.SUCCEEDED and after.next_poll_at is None
        assert [e.kind for e in await store.events(job_id)][-1] == "row_unreadable"
    finally:
        await engine.dispose()


async def test_the_purge_passes_over_an_unreadable_row_and_takes_the_others(store: JobStore) -> None:
    from datetime import timedelta

    from tunekeeper.db.store import PurgeRules

    ids = [await store.add_job(NewJob(display_name=f"job {n}", training_data=PAIRS)) for n in range(2)]
    for job in await store.claim_for_submission("me", limit=10, max_active=10, lease_seconds=30):
        assert await store.mark_submit_failed(job, error="refused")
    await write_raw(store, ids[0], "labels", deep_json(store))
    rules = PurgeRules(cancelled_after=timedelta(0), failed_after=timedelta(0), max_age=None)

    candidates = await store.purge_candidates(rules, limit=10)

    assert [candidate.job.id for candidate in candidates] == [ids[1]]


async def test_events_written_by_hand_are_shown_as_far_as_they_can_be_read(store: JobStore) -> None:
    job_id = await store.add_job(NewJob(display_name="x", training_data=PAIRS))
    detail = "CAST(:detail AS jsonb)" if store.is_postgres else ":detail"
    async with store.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO job_events (job_id, at, kind, from_state, to_state, detail)"
                f" VALUES (:id, :at, 'made up', 'nowhere', 'queued', {detail})"
            ),
            {"id": job_id, "at": store.clock(), "detail": deep_json(store)},
        )

    [event] = await store.events(job_id)

    assert (event.kind, event.from_state, event.to_state) == ("made up", None, State.QUEUED)
    assert event.detail == {"unreadable": "detail"}
    assert "made up" in "\n".join(render.timeline([event]))
