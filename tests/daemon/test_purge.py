"""The purger against the emulator: each policy, dry runs, the cap, orphans, the schedule and the lease.

Jobs reach their end states through the daemon's own dispatcher, poller and canceller (run in this process,
one pass at a time), so every model a job names really exists on the emulator; ages are set afterwards with
an UPDATE of finished_at, as if the job had finished that long ago.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from tests.harness import TEST_API_KEY, DaemonProcess, daemon_environment
from tests.waiting import wait_until
from tunekeeper.backends.gemini.adapter import GeminiBackend
from tunekeeper.backends.gemini.client import GeminiClient
from tunekeeper.backends.gemini.types import CreateTunedModelRequest, TrainingExample
from tunekeeper.backends.port import Owner
from tunekeeper.config import (
    DaemonSettings,
    DatabaseSettings,
    GeminiSettings,
    PollSettings,
    PurgeSettings,
    Settings,
)
from tunekeeper.daemon.canceller import Canceller
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.dispatcher import Dispatcher
from tunekeeper.daemon.poller import Poller
from tunekeeper.daemon.purger import LEASE_NAME, PurgeOutcome, Purger
from tunekeeper.daemon.service import open_context
from tunekeeper.daemon.worker import JobWorker
from tunekeeper.db.records import Job, NewJob
from tunekeeper.db.store import JobFilter, JobStore, PurgePolicy
from tunekeeper.db.tables import leases, tuning_jobs
from tunekeeper.emulator import Emulator
from tunekeeper.logs import configure_logging
from tunekeeper.states import State

PAIRS = [{"text_input": str(n), "output": str(n + 1)} for n in range(4)]
BASE_MODEL = "models/gemini-1.5-flash-001-tuning"
LONG_AGO = timedelta(hours=2)


def make_settings(
    database_url: str, base_url: str, *, replica: str = "purger-a", prefix: str = "", **purge: Any
) -> Settings:
    return Settings(
        database=DatabaseSettings(url=database_url, listen=False),
        gemini=GeminiSettings(
            base_url=base_url,
            api_key=SecretStr(TEST_API_KEY),
            model_id_prefix=prefix,
            max_active_jobs=100,
            creates_per_minute=6000,
            requests_per_minute=600000,
            retry_base_delay=0.01,
            retry_max_delay=0.2,
        ),
        daemon=DaemonSettings(replica_name=replica, lease_seconds=3),
        poll=PollSettings(min_interval=0.05, max_interval=0.2, min_step_seconds=0),
        purge=PurgeSettings(**purge),
    )


async def one_pass(worker: JobWorker) -> None:
    """What one turn of the worker's loop does: claim what is due and handle it."""
    for job in await worker.claim(100):
        await worker.handle(job)


async def tune(context: DaemonContext, name: str, state: State = State.SUCCEEDED) -> Job:
    """A new job, submitted by the dispatcher and followed by the poller until it is in `state`."""
    job_id = await context.store.add_job(NewJob(display_name=name, training_data=PAIRS))
    await one_pass(Dispatcher(context))
    poller = Poller(context)

    async def reached() -> Job | None:
        await one_pass(poller)
        job = await context.store.get_job(job_id)
        assert job is not None
        assert job.state in (State.TUNING, state), (job.state, job.last_error)
        return job if job.state == state else None

    job = await wait_until(reached, within=10, message=f"job {name!r} to be {state}")
    assert job.tuned_model_id is not None
    return job


async def tune_failing(context: DaemonContext, emulator: Emulator, name: str) -> Job:
    emulator.configure(fail_rate=1.0)
    try:
        return await tune(context, name, State.FAILED)
    finally:
        emulator.configure(fail_rate=0.0)


async def finished_ago(store: JobStore, job_id: int, ago: timedelta) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            tuning_jobs.update().where(tuning_jobs.c.id == job_id).values(finished_at=datetime.now(UTC) - ago)
        )


def gemini(context: DaemonContext) -> GeminiClient:
    """The Gemini API client behind the context's backend, for doing what another tool would do."""
    assert isinstance(context.backend, GeminiBackend)
    return context.backend.client


async def create_remote_model(context: DaemonContext, model_id: str, owner: Owner | None = None) -> None:
    """A model made on the service directly, not through a job: another tool's (no mark), or one carrying
    `owner`'s mark (a job's whose row is gone, or another deployment's)."""
    await gemini(context).create_tuned_model(
        CreateTunedModelRequest(
            tuned_model_id=model_id,
            display_name=model_id,
            base_model=BASE_MODEL,
            examples=[TrainingExample("a", "b"), TrainingExample("c", "d")],
            description=owner.mark if owner is not None else "",
        )
    )


def on_service(emulator: Emulator) -> set[str]:
    """Ids of the models the emulator holds (deleted ones excluded)."""
    return {model_id for model_id, model in emulator.stats()["models"].items() if model["deleted_at"] is None}


def delete_requests(emulator: Emulator) -> int:
    return int(emulator.stats()["requests"]["by_route"].get("tunedModels.delete", 0))


async def states(store: JobStore, *jobs: Job) -> list[State]:
    found = [await store.get_job(job.id) for job in jobs]
    return [job.state for job in found if job is not None]


async def purged_at_set(store: JobStore, *jobs: Job) -> list[bool]:
    """Per job, whether its row says that no model remains (purged_at set)."""
    found = [await store.get_job(job.id) for job in jobs]
    return [job.purged_at is not None for job in found if job is not None]


async def purge_events(store: JobStore, job: Job) -> list[dict[str, Any]]:
    return [event.detail for event in await store.events(job.id) if event.kind == "purged"]


def summary(outcomes: list[PurgeOutcome] | None) -> set[tuple[str, int | None, bool, str | None]]:
    assert outcomes is not None, "the purge lease was refused"
    return {(o.policy.value, o.job_id, o.deleted, o.error) for o in outcomes}


# ---- one policy at a time ----------------------------------------------------------------------------------


async def test_failed_models_go_after_failed_after_a_404_is_already_gone_and_the_job_stays_failed(
    database_url: str, emulator: Emulator
) -> None:
    settings = make_settings(database_url, emulator.base_url, failed_after=timedelta(hours=1))
    async with open_context(settings) as context:
        store = context.store
        old = await tune_failing(context, emulator, "failed long ago")
        recent = await tune_failing(context, emulator, "failed just now")
        vanished = await tune_failing(context, emulator, "deleted by hand")
        await gemini(context).delete_tuned_model(f"tunedModels/{vanished.tuned_model_id}")
        for job in (old, vanished):
            await finished_ago(store, job.id, LONG_AGO)
        assert {old.tuned_model_id, recent.tuned_model_id} <= on_service(emulator)

        outcomes = await Purger(context).run_once()

        assert summary(outcomes) == {("failed", old.id, True, None), ("failed", vanished.id, False, None)}
        assert outcomes is not None
        assert [(o.job_id, o.already_gone) for o in outcomes] == [(old.id, False), (vanished.id, True)]
        # The outcome stays: the jobs are still failed, and `purged_at` says that no model remains.
        assert await states(store, old, recent, vanished) == [State.FAILED, State.FAILED, State.FAILED]
        assert await purged_at_set(store, old, recent, vanished) == [True, False, True]
        assert [job.id for job in await store.list_jobs(JobFilter(states=frozenset({State.FAILED})))] == [
            vanished.id,
            recent.id,
            old.id,
        ]
        assert old.tuned_model_id not in on_service(emulator)
        assert recent.tuned_model_id in on_service(emulator)
        assert await purge_events(store, old) == [{"policy": "failed", "tuned_model": old.tuned_model_name}]
        assert await purge_events(store, vanished) == [
            {"policy": "failed", "tuned_model": vanished.tuned_model_name, "already_gone": True}
        ]
        # Nothing is left for a second pass: purged jobs are never deleted twice.
        deletes = delete_requests(emulator)
        assert await Purger(context).run_once() == []
        assert delete_requests(emulator) == deletes


async def test_cancelled_models_are_kept_by_the_canceller_and_purged_after_cancelled_after(
    database_url: str, emulator: Emulator
) -> None:
    settings = make_settings(database_url, emulator.base_url, cancelled_after=timedelta(hours=1))
    async with open_context(settings) as context:
        store = context.store
        emulator.configure(step_seconds=60)  # tunes for ages: still running when cancelled
        job = await tune(context, "cancelled midway", State.TUNING)
        await store.request_cancel(job.id)
        await one_pass(Canceller(context))

        cancelled = await store.get_job(job.id)
        assert cancelled is not None and cancelled.state == State.CANCELLED
        assert cancelled.purged_at is None
        assert job.tuned_model_id in on_service(emulator)  # kept for cancelled_after
        assert job.operation_name is not None
        operation = await gemini(context).get_operation(job.operation_name)
        assert operation.done and operation.error is not None and operation.error.code == 1  # CANCELLED
        [cancel_event] = [e for e in await store.events(job.id) if e.kind == "cancelled"]
        assert cancel_event.detail == {"model_deleted": False}

        assert await Purger(context).run_once() == []  # within cancelled_after
        assert job.tuned_model_id in on_service(emulator)

        await finished_ago(store, job.id, LONG_AGO)
        outcomes = await Purger(context).run_once()
        assert summary(outcomes) == {("cancelled", job.id, True, None)}
        assert await states(store, job) == [State.CANCELLED]
        assert await purged_at_set(store, job) == [True]
        assert job.tuned_model_id not in on_service(emulator)
        assert await purge_events(store, job) == [{"policy": "cancelled", "tuned_model": job.tuned_model_name}]


async def test_keep_until_written_as_iso_text_by_a_producer(database_url: str, emulator: Emulator) -> None:
    settings = make_settings(database_url, emulator.base_url)
    async with open_context(settings) as context:
        store = context.store
        expired_z = await tune(context, "keep until 2001 z")
        expired_offset = await tune(context, "keep until 2001 offset")
        future = await tune(context, "keep until 2999")
        no_date = await tune(context, "keep forever")
        # The producer's own words: ISO 8601 text with 'T' and 'Z', or with an offset, in plain SQL.
        async with store.engine.begin() as conn:
            for job, text in (
                (expired_z, "2001-02-03T04:05:06Z"),
                (expired_offset, "2001-02-03 04:05:06+02:00"),
                (future, "2999-01-01T00:00:00Z"),
            ):
                await conn.execute(sa.text(f"UPDATE tuning_jobs SET keep_until = '{text}' WHERE id = {job.id}"))
        read_back = await store.get_job(expired_offset.id)
        assert read_back is not None and read_back.keep_until == datetime(2001, 2, 3, 2, 5, 6, tzinfo=UTC)

        outcomes = await Purger(context).run_once()

        assert summary(outcomes) == {
            ("keep_until", expired_z.id, True, None),
            ("keep_until", expired_offset.id, True, None),
        }
        assert await states(store, expired_z, expired_offset, future, no_date) == [State.SUCCEEDED] * 4
        assert await purged_at_set(store, expired_z, expired_offset, future, no_date) == [True, True, False, False]
        remaining = on_service(emulator)
        assert expired_z.tuned_model_id not in remaining and expired_offset.tuned_model_id not in remaining
        assert {future.tuned_model_id, no_date.tuned_model_id} <= remaining


async def test_max_age_is_off_by_default_and_then_purges_old_succeeded_models(
    database_url: str, emulator: Emulator
) -> None:
    async with open_context(make_settings(database_url, emulator.base_url)) as context:
        old = await tune(context, "old success")
        young = await tune(context, "young success")
        await finished_ago(context.store, old.id, timedelta(days=400))
        assert await Purger(context).run_once() == []  # no max_age: succeeded models stay, however old
        assert {old.tuned_model_id, young.tuned_model_id} <= on_service(emulator)

    settings = make_settings(database_url, emulator.base_url, max_age=timedelta(hours=1))
    async with open_context(settings) as context:
        outcomes = await Purger(context).run_once()
        assert summary(outcomes) == {("max_age", old.id, True, None)}
        assert await purged_at_set(context.store, old, young) == [True, False]
        assert old.tuned_model_id not in on_service(emulator)
        assert young.tuned_model_id in on_service(emulator)
        assert await purge_events(context.store, old) == [{"policy": "max_age", "tuned_model": old.tuned_model_name}]


async def test_dry_run_lists_what_would_go_and_deletes_nothing(database_url: str, emulator: Emulator) -> None:
    settings = make_settings(database_url, emulator.base_url, prefix="tk-", orphans=True)
    async with open_context(settings) as context:
        failed = await tune_failing(context, emulator, "failed")
        await create_remote_model(context, "tk-orphan-1", Owner(context.deployment, 9999))
        before = on_service(emulator)

        outcomes = await Purger(context).run_once(dry_run=True)

        assert summary(outcomes) == {("failed", failed.id, False, None), ("orphan", None, False, None)}
        assert outcomes is not None and {o.tuned_model for o in outcomes} == {
            failed.tuned_model_name,
            "tunedModels/tk-orphan-1",
        }
        assert on_service(emulator) == before
        assert delete_requests(emulator) == 0
        assert await states(context.store, failed) == [State.FAILED]
        assert await purge_events(context.store, failed) == []
        assert await context.store.events(None) == []  # no orphan_purged either

    # The same as a setting (purge.dry_run), which a scheduled run follows.
    settings = make_settings(database_url, emulator.base_url, prefix="tk-", orphans=True, dry_run=True)
    async with open_context(settings) as context:
        assert summary(await Purger(context).run_once()) == {
            ("failed", failed.id, False, None),
            ("orphan", None, False, None),
        }
        assert on_service(emulator) == before


async def test_a_run_deletes_at_most_max_deletes_per_run_oldest_first(database_url: str, emulator: Emulator) -> None:
    settings = make_settings(database_url, emulator.base_url, max_deletes_per_run=2)
    async with open_context(settings) as context:
        jobs = [await tune_failing(context, emulator, f"failed {n}") for n in range(3)]
        # Finished 3, 2 and 1 hours ago: the two oldest go first.
        for hours, job in zip((1, 3, 2), jobs, strict=True):
            await finished_ago(context.store, job.id, timedelta(hours=hours))

        first = await Purger(context).run_once()
        assert summary(first) == {("failed", jobs[1].id, True, None), ("failed", jobs[2].id, True, None)}
        assert await purged_at_set(context.store, *jobs) == [False, True, True]
        assert delete_requests(emulator) == 2

        second = await Purger(context).run_once()
        assert summary(second) == {("failed", jobs[0].id, True, None)}
        assert on_service(emulator).isdisjoint(job.tuned_model_id for job in jobs)


async def test_orphans_carry_this_deployments_mark_and_have_no_job(database_url: str, emulator: Emulator) -> None:
    settings = make_settings(database_url, emulator.base_url)
    async with open_context(settings) as context:
        owned = await tune(context, "owned model")
        deleted = await tune(context, "row deleted by a producer")
        async with context.store.engine.begin() as conn:
            await conn.execute(tuning_jobs.delete().where(tuning_jobs.c.id == deleted.id))
        await create_remote_model(context, "unmarked-model")  # another tool's
        await create_remote_model(context, "other-deployment", Owner("f" * 32, 9999))  # another database's
        before = on_service(emulator)
        assert {owned.tuned_model_id, deleted.tuned_model_id, "unmarked-model", "other-deployment"} == before

        outcomes = await Purger(context).run_once()

        assert outcomes == [PurgeOutcome(PurgePolicy.ORPHAN, deleted.tuned_model_name or "", None, deleted=True)]
        assert on_service(emulator) == before - {deleted.tuned_model_id}
        [event] = await context.store.events(None)
        assert (event.job_id, event.kind, event.detail) == (
            None,
            "orphan_purged",
            {"tuned_model": deleted.tuned_model_name, "job_id": deleted.id},
        )
        assert await states(context.store, owned) == [State.SUCCEEDED]


async def test_orphans_are_left_alone_unless_purge_orphans_is_on(database_url: str, emulator: Emulator) -> None:
    settings = make_settings(database_url, emulator.base_url, orphans=False)
    async with open_context(settings) as context:
        await create_remote_model(context, "our-orphan", Owner(context.deployment, 9999))

        assert await Purger(context).run_once() == []
        assert "our-orphan" in on_service(emulator)
        assert "tunedModels.list" not in emulator.stats()["requests"]["by_route"]  # it did not even look


async def test_models_still_tuning_or_succeeded_within_policy_are_never_touched(
    database_url: str, emulator: Emulator
) -> None:
    settings = make_settings(
        database_url,
        emulator.base_url,
        prefix="tk-",
        orphans=True,
        max_age=timedelta(days=30),
        cancelled_after=timedelta(0),
        failed_after=timedelta(0),
    )
    async with open_context(settings) as context:
        store = context.store
        succeeded = await tune(context, "fresh success")
        kept = await tune(context, "kept until 2999")
        async with store.engine.begin() as conn:
            await conn.execute(
                sa.text(f"UPDATE tuning_jobs SET keep_until = '2999-01-01T00:00:00Z' WHERE id = {kept.id}")
            )
        await finished_ago(store, kept.id, timedelta(days=10))
        never_sent = await store.add_job(NewJob(display_name="cancelled while queued", training_data=PAIRS))
        await store.request_cancel(never_sent)
        await store.cancel_queued()
        emulator.configure(step_seconds=60)
        tuning = await tune(context, "still tuning", State.TUNING)
        # Even an old, finished-looking timestamp does not make a tuning job's model purgeable.
        await finished_ago(store, tuning.id, timedelta(days=365))

        assert await Purger(context).run_once() == []

        assert delete_requests(emulator) == 0
        assert {succeeded.tuned_model_id, kept.tuned_model_id, tuning.tuned_model_id} == on_service(emulator)
        queued = await store.get_job(never_sent)
        assert queued is not None and queued.state == State.CANCELLED
        assert await states(store, succeeded, kept, tuning) == [State.SUCCEEDED, State.SUCCEEDED, State.TUNING]


# ---- the command ---------------------------------------------------------------------------------------------


def run_cli(
    database_url: str, base_url: str, *args: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUNEKEEPER_")}
    env.update(
        {
            "TUNEKEEPER_DATABASE__URL": database_url,
            "TUNEKEEPER_GEMINI__BASE_URL": base_url,
            "TUNEKEEPER_GEMINI__API_KEY": TEST_API_KEY,
            **(extra or {}),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "tunekeeper", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_purge_command_dry_run_then_for_real(database_url: str, emulator: Emulator) -> None:
    async with open_context(make_settings(database_url, emulator.base_url)) as context:
        failed = await tune_failing(context, emulator, "failed")
    expected = {
        "policy": "failed",
        "tuned_model": failed.tuned_model_name,
        "job_id": failed.id,
        "error": None,
        "already_gone": False,
        "recheck_until": None,
    }

    # The emulator runs in this process's loop: the command runs in a thread so that the loop can answer it.
    dry = await asyncio.to_thread(run_cli, database_url, emulator.base_url, "purge", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == [expected | {"deleted": False}]
    assert failed.tuned_model_id in on_service(emulator)

    real = await asyncio.to_thread(run_cli, database_url, emulator.base_url, "purge")
    assert real.returncode == 0, real.stderr
    header, row = real.stdout.splitlines()
    assert header.split() == ["JOB", "POLICY", "MODEL", "RESULT"]
    assert row.split() == [str(failed.id), "failed", str(failed.tuned_model_name), "deleted"]
    assert failed.tuned_model_id not in on_service(emulator)

    async with open_context(make_settings(database_url, emulator.base_url)) as context:
        assert await states(context.store, failed) == [State.FAILED]
        assert await purged_at_set(context.store, failed) == [True]
        assert await purge_events(context.store, failed) == [
            {"policy": "failed", "tuned_model": failed.tuned_model_name}
        ]
        assert await Purger(context).run_once() == []  # nothing left

    # Still failed for the commands too: listed as failed, and retried.
    listed = await asyncio.to_thread(run_cli, database_url, emulator.base_url, "jobs", "--state", "failed", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [job["id"] for job in json.loads(listed.stdout)] == [failed.id]
    retried = await asyncio.to_thread(run_cli, database_url, emulator.base_url, "retry", str(failed.id))
    assert retried.returncode == 0, retried.stderr


async def test_a_row_naming_no_valid_model_fails_alone_and_the_command_prints_no_traceback(
    database_url: str, emulator: Emulator
) -> None:
    async with open_context(make_settings(database_url, emulator.base_url)) as context:
        store = context.store
        bad = await tune_failing(context, emulator, "bad name")
        good = await tune_failing(context, emulator, "good name")
        await finished_ago(store, bad.id, LONG_AGO)  # the bad row sorts first
        async with store.engine.begin() as conn:  # a producer's write
            await conn.execute(
                tuning_jobs.update().where(tuning_jobs.c.id == bad.id).values(tuned_model_name="tunedModels/../x y")
            )

        outcomes = await Purger(context).run_once()

        assert outcomes is not None
        [(bad_outcome, good_outcome)] = [outcomes]
        assert (bad_outcome.job_id, bad_outcome.deleted) == (bad.id, False)
        assert bad_outcome.error is not None and "tuned_model_name 'tunedModels/../x y'" in bad_outcome.error
        assert (good_outcome.job_id, good_outcome.deleted, good_outcome.error) == (good.id, True, None)
        assert good.tuned_model_id not in on_service(emulator)
        stored = await store.get_job(bad.id)
        assert stored is not None and stored.last_error == bad_outcome.error and stored.purged_at is None
        assert [e.detail for e in await store.events(bad.id) if e.kind == "purge_delete_failed"] == [
            {"policy": "failed", "error": bad_outcome.error}
        ]

    done = await asyncio.to_thread(run_cli, database_url, emulator.base_url, "purge")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    [row] = done.stdout.splitlines()[1:]
    assert row.split()[:3] == [str(bad.id), "failed", "tunedModels/../x"]


# ---- one purger at a time ------------------------------------------------------------------------------------


async def lease_owner(store: JobStore) -> str | None:
    async with store.engine.connect() as conn:
        owner: str | None = (
            await conn.execute(sa.select(leases.c.owner).where(leases.c.name == LEASE_NAME))
        ).scalar_one_or_none()
    return owner


async def test_purgers_racing_for_a_lease_row_that_does_not_exist_yet_never_fail(
    database_url: str, emulator: Emulator
) -> None:
    settings_a = make_settings(database_url, emulator.base_url, replica="purger-a")
    settings_b = make_settings(database_url, emulator.base_url, replica="purger-b")
    async with open_context(settings_a) as a, open_context(settings_b) as b:
        for _ in range(20):  # the first run on a new database, again and again
            async with a.store.engine.begin() as conn:
                await conn.execute(leases.delete())
            results = await asyncio.gather(Purger(a).run_once(), Purger(b).run_once())
            assert all(result in ([], None) for result in results), results
            assert [] in results  # somebody purged
        assert await lease_owner(a.store) is None


async def test_two_purgers_never_purge_at_once(database_url: str, emulator: Emulator) -> None:
    settings_a = make_settings(database_url, emulator.base_url, replica="purger-a")
    settings_b = make_settings(database_url, emulator.base_url, replica="purger-b")
    async with open_context(settings_a) as a, open_context(settings_b) as b:
        first_batch = [await tune_failing(a, emulator, f"first {n}") for n in range(3)]
        emulator.configure(latency=(0.4, 0.4))  # every delete takes a while: the runs would overlap

        # Both at once, with no lease row yet: exactly one runs, the other is told to skip (no error).
        results = await asyncio.gather(Purger(a).run_once(), Purger(b).run_once())
        assert sorted(result is None for result in results) == [False, True], results
        [winner] = [result for result in results if result is not None]
        assert summary(winner) == {("failed", job.id, True, None) for job in first_batch}
        assert await lease_owner(a.store) is None  # released at the end of the run

        emulator.configure(latency=None)
        second_batch = [await tune_failing(a, emulator, f"second {n}") for n in range(3)]
        emulator.configure(latency=(0.4, 0.4))
        run_a = asyncio.create_task(Purger(a).run_once())
        await wait_until(lambda: lease_owner(a.store), within=5, message="purger A to take the lease")
        assert await lease_owner(b.store) == "purger-a"
        assert await Purger(b).run_once() is None
        assert not run_a.done(), "purger A finished before B tried: the test proved nothing"
        assert summary(await run_a) == {("failed", job.id, True, None) for job in second_batch}

        # Once A is done, B may purge (and finds nothing left).
        emulator.configure(latency=None)
        assert await Purger(b).run_once() == []

        # Every purge event of the second batch came from A's run, one per job.
        purged = [await purge_events(a.store, job) for job in first_batch + second_batch]
        assert all(len(details) == 1 for details in purged), purged


def purge_runs(daemon: DaemonProcess) -> list[tuple[datetime, datetime, list[int]]]:
    """Each of the daemon's purge runs that deleted something: (first deletion, end, the jobs purged)."""
    runs: list[tuple[datetime, datetime, list[int]]] = []
    deletions: list[dict[str, Any]] = []
    for line in daemon.log_lines():
        if line.get("event") == "model_purged":
            deletions.append(line)
        elif line.get("event") == "purge_finished":
            if deletions:
                start = datetime.fromisoformat(deletions[0]["timestamp"])
                end = datetime.fromisoformat(line["timestamp"])
                runs.append((start, end, [d["job_id"] for d in deletions]))
            deletions = []
    return runs


@pytest.mark.postgres
async def test_two_daemons_on_one_database_take_turns_purging(
    postgres_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    database_url = postgres_url  # replicas share PostgreSQL; SQLite takes one daemon per file
    async with open_context(make_settings(database_url, emulator.base_url)) as context:
        failed = [await tune_failing(context, emulator, f"failed {n}") for n in range(4)]
        emulator.configure(latency=(0.4, 0.4))  # a run of two deletions outlasts the purge interval
        settings = {
            "TUNEKEEPER_PURGE__INTERVAL": "1",
            "TUNEKEEPER_PURGE__MAX_DELETES_PER_RUN": "2",
            "TUNEKEEPER_LOG__LEVEL": "info",
        }
        daemons = [
            DaemonProcess(
                tmp_path,
                daemon_environment(
                    database_url, emulator.base_url, {**settings, "TUNEKEEPER_DAEMON__REPLICA_NAME": name}
                ),
                name=name,
            )
            for name in ("replica-a", "replica-b")
        ]
        try:
            await asyncio.gather(*(daemon.start() for daemon in daemons))  # started together: ticks collide

            async def all_purged() -> bool:
                return await purged_at_set(context.store, *failed) == [True] * len(failed)

            await wait_until(all_purged, within=30, message="every failed job's model to be purged")
            await wait_until(
                lambda: sum(len(purge_runs(d)) for d in daemons) >= 2, within=5, message="purge_finished lines"
            )
        finally:
            for daemon in daemons:
                if daemon.running:
                    await daemon.stop()
        runs = [(daemon.name, *run) for daemon in daemons for run in purge_runs(daemon)]

    # Each model deleted once: two purgers at once would both delete the oldest models, and one would get 404s.
    assert emulator.stats()["requests"]["by_route_status"]["tunedModels.delete"] == {"200": len(failed)}
    assert sorted(job_id for *_, jobs in runs for job_id in jobs) == sorted(job.id for job in failed)
    assert all(len(jobs) <= 2 for *_, jobs in runs), runs
    # And no two runs overlap in time.
    ordered = sorted(runs, key=lambda run: run[1])
    for earlier, later in itertools.pairwise(ordered):
        assert earlier[2] <= later[1], f"purge runs overlap: {earlier} and {later}"


@pytest.mark.parametrize(
    ("delete_takes", "grace", "purged"),
    [(3.0, 20.0, True), (5.0, 0.5, False)],
    ids=["run-ends-within-grace", "run-cancelled-after-grace"],
)
async def test_a_daemon_stopped_in_the_middle_of_a_purge_run_exits_cleanly(
    database_url: str,
    emulator: Emulator,
    tmp_path: Path,
    delete_takes: float,
    grace: float,
    purged: bool,
) -> None:
    async with open_context(make_settings(database_url, emulator.base_url)) as context:
        job = await tune_failing(context, emulator, "stopped mid-purge")
        # The run's delete is in flight this long (and the emulator, closing, waits for it to end).
        emulator.configure(latency=(delete_takes, delete_takes))
        env = daemon_environment(
            database_url,
            emulator.base_url,
            {
                "TUNEKEEPER_PURGE__INTERVAL": "1",
                "TUNEKEEPER_DAEMON__REPLICA_NAME": "stopping",
                "TUNEKEEPER_DAEMON__SHUTDOWN_GRACE": str(grace),
            },
        )
        async with DaemonProcess(tmp_path, env) as daemon:

            async def purging() -> bool:
                return await lease_owner(context.store) == "stopping"

            await wait_until(purging, within=20, message="the daemon's purge run to start")
            assert await daemon.stop(within=grace + 10) == 0

        assert await lease_owner(context.store) is None  # released, not left to expire
        assert await states(context.store, job) == [State.FAILED]
        assert await purged_at_set(context.store, job) == [purged]
        [stopping] = daemon.events("daemon_stopping")
        ended = daemon.events("purge_finished" if purged else "purge_interrupted")
        assert [line["timestamp"] > stopping["timestamp"] for line in ended] == [True]  # the run outlived the stop
        assert daemon.events("daemon_stopped")


# ---- on a schedule -------------------------------------------------------------------------------------------


async def test_the_daemon_purges_on_its_own_schedule(
    database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(fail_rate=1.0)  # every job fails; its model stays behind on the service
    env = daemon_environment(database_url, emulator.base_url, {"TUNEKEEPER_PURGE__INTERVAL": "1"})
    job_id = await store.add_job(NewJob(display_name="doomed", training_data=PAIRS))
    async with DaemonProcess(tmp_path, env) as daemon:

        async def purged() -> Job | None:
            job = await store.get_job(job_id)
            return job if job is not None and job.purged_at is not None else None

        job = await wait_until(purged, within=20, message="the failed job's model to be purged")
        # Logged after the commit just seen; an earlier run that found nothing may have logged purge_finished.
        lines = await daemon.wait_for_events("model_purged", lambda line: line.get("job_id") == job_id)
    kinds = [event.kind for event in await store.events(job_id)]
    assert kinds[-2:] == ["tuning_failed", "purged"], kinds
    assert job.state is State.FAILED
    assert job.tuned_model_id is not None and job.tuned_model_id not in on_service(emulator)
    assert [(line["policy"], line["dry_run"], line["tuned_model"]) for line in lines] == [
        ("failed", False, job.tuned_model_name)
    ]


async def test_a_database_outage_during_a_scheduled_purge_is_one_warning_line(
    sqlite_url: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    async with open_context(make_settings(sqlite_url, emulator.base_url)) as context:
        await context.store.engine.dispose()
        path = Path(str(make_url(sqlite_url).database))
        await asyncio.to_thread(path.write_bytes, b"not a database, " * 1024)  # every query fails now, an outage

        await Purger(context)._scheduled_run()

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    [failed] = [line for line in lines if line["event"] == "purge_failed"]
    assert failed["level"] == "warning"
    assert "not a database" in failed["error"] and "\n" not in failed["error"]
    assert "exception" not in failed, "an outage is not a bug: no traceback"
