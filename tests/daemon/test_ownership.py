"""A job adopts only remote work that provably carries its own mark: this database's identity and its id.

Two databases sharing one Google project (staging and production, or a SQLite file deleted and made anew, whose
job ids start again at 1) derive the same tuned-model id for their first job. Without the mark the second
would adopt the first's model on 409 ALREADY_EXISTS: a job "succeeding" with a model trained on someone
else's data.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import sqlite_url_of
from tests.daemon.test_purge import (
    PAIRS,
    create_remote_model,
    delete_requests,
    make_settings,
    on_service,
    one_pass,
    tune,
)
from tunekeeper.backends.port import NotOurs, Owner
from tunekeeper.daemon.dispatcher import Dispatcher
from tunekeeper.daemon.purger import Purger
from tunekeeper.daemon.service import open_context
from tunekeeper.db.migrate import upgrade
from tunekeeper.db.records import NewJob
from tunekeeper.db.tables import tuning_jobs
from tunekeeper.emulator import Emulator
from tunekeeper.states import State


def created(emulator: Emulator, model_id: str) -> dict[str, int]:
    counts: dict[str, int] = emulator.stats()["creates"]["by_model"][model_id]
    return counts


async def test_each_database_has_its_own_identity(sqlite_url: str, tmp_path: Path) -> None:
    other = sqlite_url_of(tmp_path / "other.db")
    await upgrade(other)
    unused = "http://127.0.0.1:9"  # nothing is sent
    async with (
        open_context(make_settings(sqlite_url, unused)) as first,
        open_context(make_settings(other, unused)) as second,
    ):
        assert first.deployment != second.deployment
        assert len(first.deployment) == 32 and int(first.deployment, 16) >= 0
    async with open_context(make_settings(sqlite_url, unused)) as again:
        assert again.deployment == first.deployment  # made once, with the schema


async def test_a_second_database_does_not_adopt_the_first_ones_model(
    sqlite_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    async with open_context(make_settings(sqlite_url, emulator.base_url)) as staging:
        theirs = await tune(staging, "number generator")
    # A fresh database on the same project: its job 1 derives the same tuned-model id.
    fresh = sqlite_url_of(tmp_path / "fresh.db")
    await upgrade(fresh)
    async with open_context(make_settings(fresh, emulator.base_url)) as production:
        job_id = await production.store.add_job(NewJob(display_name="number generator", training_data=PAIRS))
        assert job_id == theirs.id
        await one_pass(Dispatcher(production))
        job = await production.store.get_job(job_id)

    assert job is not None and job.state is State.FAILED
    assert job.tuned_model_id == theirs.tuned_model_id
    assert job.tuned_model_name is None  # nothing adopted
    assert job.last_error is not None and "is not this job's" in job.last_error
    assert theirs.tuned_model_id is not None
    assert created(emulator, theirs.tuned_model_id) == {"attempted": 2, "accepted": 1}


@pytest.mark.parametrize("mark", ["none", "other job", "other deployment"])
async def test_a_model_under_the_jobs_name_without_its_mark_fails_the_job(
    database_url: str, emulator: Emulator, mark: str
) -> None:
    async with open_context(make_settings(database_url, emulator.base_url)) as context:
        job_id = await context.store.add_job(
            NewJob(display_name="taken", training_data=PAIRS, tuned_model_id="taken-x")
        )
        owner = {
            "none": None,
            "other job": Owner(context.deployment, job_id + 1),
            "other deployment": Owner("0" * 32, job_id),
        }[mark]
        await create_remote_model(context, "taken-x", owner)
        await one_pass(Dispatcher(context))
        job = await context.store.get_job(job_id)

    assert job is not None and job.state is State.FAILED, job.state if job else None
    assert job.last_error is not None and "tunedModels/taken-x already exists and is not this job's" in job.last_error
    assert emulator.stats()["models"]["taken-x"]["deleted_at"] is None  # someone else's model is left alone


async def test_a_row_rewritten_to_name_a_foreign_model_is_never_sent_to_the_service(
    sqlite_url: str, emulator: Emulator
) -> None:
    # On SQLite nothing stops an UPDATE of the daemon's columns: the names read back are checked instead.
    settings = make_settings(sqlite_url, emulator.base_url, failed_after=timedelta(0))
    async with open_context(settings) as context:
        await create_remote_model(context, "someone-elses", None)
        job = await tune(context, "mine")
        async with context.store.engine.begin() as conn:
            await conn.execute(
                tuning_jobs.update()
                .where(tuning_jobs.c.id == job.id)
                .values(state="failed", tuned_model_name="tunedModels/someone-elses", finished_at=datetime.now(UTC))
            )
        deletes = delete_requests(emulator)
        outcomes = await Purger(context).run_once()
        assert outcomes is not None and [outcome.job_id for outcome in outcomes if outcome.deleted] == []
        assert delete_requests(emulator) == deletes
        assert {"someone-elses", job.tuned_model_id} <= on_service(emulator)
        rewritten = await context.store.get_job(job.id)
        assert rewritten is not None and rewritten.state is State.FAILED
        assert rewritten.last_error is not None and "is not this job's model" in rewritten.last_error

        generated = emulator.stats()["requests"]["by_route"].get("tunedModels.generateContent", 0)
        for name in ("models/gemini-1.0-pro-001", "tunedModels/../../v1/models/x", "corpora/x"):
            with pytest.raises(NotOurs):
                await context.backend.generate(name, "what is 1?")
        assert emulator.stats()["requests"]["by_route"].get("tunedModels.generateContent", 0) == generated
