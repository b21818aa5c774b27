"""The purger on Vertex AI: each policy removes the endpoint (undeployed first), the model and the staged training
file; a delete the service refuses is kept on the job and reported by `tunekeeper purge`, and tried again once
per run, not in a loop; orphans (tuning jobs with this deployment's labels whose row is gone) lose their model,
while another deployment's labelled work and unlabelled work are never touched."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from tests.vertex_daemon.support import (
    BUCKET,
    RefuseDeletes,
    client,
    deployments,
    emulator_config,
    emulator_with,
    endpoint_exists,
    finished_ago,
    get_job,
    one_pass,
    request_cancel,
    route_count,
    staged,
    tune,
    vertex_environment,
    vertex_settings,
    vx_emulator,
    vx_key_file,
)
from tests.waiting import wait_until
from tunekeeper.backends.port import Owner
from tunekeeper.backends.vertex.adapter import owner_labels
from tunekeeper.backends.vertex.types import TuningJobSpec
from tunekeeper.daemon.canceller import Canceller
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.purger import Purger
from tunekeeper.daemon.service import open_context
from tunekeeper.emulator import Emulator
from tunekeeper.states import State

__all__ = ["vx_emulator", "vx_key_file"]  # fixtures, used by name

LONG_AGO = timedelta(hours=2)


async def assert_all_removed(context: DaemonContext, emulator: Emulator, job_id: int, endpoint: str | None) -> None:
    if endpoint is not None:
        assert not await endpoint_exists(context, endpoint)
    assert not await staged(context, job_id)
    assert deployments(emulator)["models"] == 0 and deployments(emulator)["endpoints"] == 0


async def test_keep_until_removes_endpoint_model_and_staged_file_undeploying_first(
    database_url: str, vx_emulator: Emulator, vx_key_file: Path
) -> None:
    settings = vertex_settings(database_url, vx_emulator, vx_key_file)
    async with open_context(settings) as context:
        store = context.store
        job = await tune(context, "kept a while")
        kept = await tune(context, "kept for ever")
        assert job.tuned_endpoint_name is not None and await endpoint_exists(context, job.tuned_endpoint_name)
        async with store.engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE tuning_jobs SET keep_until = :at WHERE id = :id"),
                {"at": store.clock() - LONG_AGO, "id": job.id},
            )

        outcomes = await Purger(context).run_once()

        assert outcomes is not None
        assert [(o.policy.value, o.job_id, o.deleted, o.error) for o in outcomes] == [
            ("keep_until", job.id, True, None)
        ]
        purged = await get_job(store, job.id)
        assert purged.state is State.SUCCEEDED and purged.purged_at is not None  # the outcome stays
        assert not await endpoint_exists(context, job.tuned_endpoint_name)
        assert not await staged(context, job.id)
        # Google's order: the endpoint's model undeployed, then endpoint and model deleted.
        assert route_count(vx_emulator, "endpoints.undeployModel") == 1
        assert route_count(vx_emulator, "endpoints.delete") == 1
        assert route_count(vx_emulator, "models.delete") == 1
        assert route_count(vx_emulator, "models.delete", "400") == 0
        assert route_count(vx_emulator, "endpoints.delete", "400") == 0
        # The other job keeps everything.
        assert kept.tuned_endpoint_name is not None and await endpoint_exists(context, kept.tuned_endpoint_name)
        assert await staged(context, kept.id)
        assert deployments(vx_emulator)["models"] == 1


async def test_failed_and_cancelled_policies_remove_what_the_jobs_left(
    database_url: str, vx_emulator: Emulator, vx_key_file: Path
) -> None:
    settings = vertex_settings(
        database_url, vx_emulator, vx_key_file, failed_after=timedelta(hours=1), cancelled_after=timedelta(hours=1)
    )
    async with open_context(settings) as context:
        store = context.store
        vx_emulator.configure(fail_rate=1.0)
        failed = await tune(context, "failed", State.FAILED)
        vx_emulator.configure(fail_rate=0.0, step_seconds=5)
        running = await tune(context, "cancelled", State.TUNING, epoch_count=50)
        await request_cancel(store, running.id, State.TUNING)
        vx_emulator.configure(step_seconds=0.01)  # the cancel ends quickly
        await one_pass(Canceller(context))
        cancelled = await get_job(store, running.id)
        assert cancelled.state is State.CANCELLED and cancelled.purged_at is None  # kept: cancelled_after
        assert await staged(context, failed.id) and await staged(context, cancelled.id)

        assert await Purger(context).run_once() == []  # too recent for either policy
        for job in (failed, cancelled):
            await finished_ago(store, job.id, LONG_AGO)
        outcomes = await Purger(context).run_once()

        assert outcomes is not None
        assert sorted((o.policy.value, o.job_id, o.deleted, o.error) for o in outcomes) == sorted(
            [("failed", failed.id, True, None), ("cancelled", cancelled.id, True, None)]
        )
        for job in (failed, cancelled):
            done = await get_job(store, job.id)
            assert done.state is job.state and done.purged_at is not None
            assert not await staged(context, job.id)
        # Purged jobs are not tried again.
        assert await Purger(context).run_once() == []


async def test_a_refused_delete_is_kept_on_the_job_reported_and_tried_once_per_run(
    database_url: str, tmp_path: Path
) -> None:
    refuse = RefuseDeletes()
    async with emulator_with(emulator_config(), refuse.middleware) as emulator:
        key_file = emulator.write_service_account_file(tmp_path / "key.json", project="tk-vertex-proof")
        settings = vertex_settings(database_url, emulator, key_file, max_age=timedelta(0))
        async with open_context(settings) as context:
            store = context.store
            job = await tune(context, "undeletable")
            refuse.on = True

            first = await Purger(context).run_once()
            assert first is not None and len(first) == 1
            assert first[0].deleted is False and first[0].error is not None
            assert "PERMISSION_DENIED (403)" in first[0].error
            assert refuse.refused == 1  # one attempt in the run, not a retry loop
            refused = await get_job(store, job.id)
            assert refused.state is State.SUCCEEDED and refused.purged_at is None
            assert refused.last_error == first[0].error
            # Everything else went: the endpoint (undeployed first) and the staged file.
            assert job.tuned_endpoint_name is not None and not await endpoint_exists(context, job.tuned_endpoint_name)
            assert not await staged(context, job.id)

            second = await Purger(context).run_once()
            assert second is not None and [o.error for o in second] == [first[0].error]
            assert refuse.refused == 2  # the next run tries once more
            events = [e for e in await store.events(job.id) if e.kind == "purge_delete_failed"]
            assert [e.detail for e in events] == [{"policy": "max_age", "error": first[0].error}]  # recorded once

            # `tunekeeper purge` reports it and exits 1.
            env = vertex_environment(database_url, emulator, key_file, {"TUNEKEEPER_PURGE__MAX_AGE": "0"})
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "tunekeeper", "purge", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 1, done.stderr
            reported = json.loads(done.stdout)
            assert [(r["job_id"], r["deleted"], r["error"]) for r in reported] == [(job.id, False, first[0].error)]
            assert refuse.refused == 3

            refuse.on = False  # the service relents: the next run finishes the job
            third = await Purger(context).run_once()
            assert third is not None and [(o.deleted, o.error) for o in third] == [(True, None)]
            done = await get_job(store, job.id)
            assert done.state is State.SUCCEEDED and done.purged_at is not None
            assert deployments(emulator)["models"] == 0


async def create_labelled_job(context: DaemonContext, name: str, labels: dict[str, str]) -> str:
    """A tuning job made on the service directly, with `labels`; its name."""
    uri = f"gs://{BUCKET}/elsewhere/{name}.jsonl"
    line = json.dumps(
        {"contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]}]}
    )
    await client(context).storage.upload(uri, (line + "\n").encode(), "application/jsonl")
    spec = TuningJobSpec(base_model="gemini-2.5-flash", display_name=name, training_uri=uri, labels=labels)
    return (await client(context).create_tuning_job(spec)).name


async def test_orphans_lose_their_model_and_nobody_elses_work_is_touched(
    database_url: str, vx_emulator: Emulator, vx_key_file: Path
) -> None:
    settings = vertex_settings(database_url, vx_emulator, vx_key_file)
    async with open_context(settings) as context:
        store = context.store
        orphan = await tune(context, "row deleted")
        other = await create_labelled_job(context, "other", owner_labels(Owner("0" * 32, orphan.id)))
        stranger = await create_labelled_job(context, "stranger", {"team": "ml"})

        async def ended() -> bool:
            remote = [await client(context).get_tuning_job(name) for name in (other, stranger)]
            return all(job.state.ended for job in remote)

        await wait_until(ended, within=10, message="the other tuning jobs to succeed")
        others = [await client(context).get_tuning_job(name) for name in (other, stranger)]
        assert all(job.tuned_model is not None for job in others)
        async with store.engine.begin() as conn:  # a producer deletes the row
            await conn.execute(sa.text("DELETE FROM job_events WHERE job_id = :id"), {"id": orphan.id})
            await conn.execute(sa.text("DELETE FROM tuning_jobs WHERE id = :id"), {"id": orphan.id})
        assert deployments(vx_emulator)["models"] == 3

        outcomes = await Purger(context).run_once()

        assert outcomes is not None
        assert [(o.policy.value, o.tuned_model, o.job_id, o.deleted) for o in outcomes] == [
            ("orphan", orphan.tuned_model_name, None, True)
        ]
        assert orphan.tuned_endpoint_name is not None
        assert not await endpoint_exists(context, orphan.tuned_endpoint_name)
        assert not await staged(context, orphan.id)
        assert deployments(vx_emulator)["models"] == 2  # the other deployment's and the unlabelled one remain
        for job in others:
            assert job.tuned_model is not None and await endpoint_exists(context, job.tuned_model.endpoint)
        async with store.engine.connect() as conn:
            details = (await conn.execute(sa.text("SELECT detail FROM job_events WHERE kind = 'orphan_purged'"))).all()
        assert [json.loads(d) if isinstance(d, str) else d for (d,) in details] == [
            {"tuned_model": orphan.tuned_model_name, "job_id": orphan.id}
        ]
        assert await Purger(context).run_once() == []  # nothing more of ours


async def test_a_row_naming_no_valid_tuning_job_fails_alone(
    database_url: str, vx_emulator: Emulator, vx_key_file: Path
) -> None:
    settings = vertex_settings(database_url, vx_emulator, vx_key_file, max_age=timedelta(0))
    async with open_context(settings) as context:
        store = context.store
        bad = await tune(context, "bad name")
        good = await tune(context, "good name")
        await finished_ago(store, bad.id, LONG_AGO)  # the bad row sorts first
        async with store.engine.begin() as conn:  # a producer's write
            await conn.execute(
                sa.text("UPDATE tuning_jobs SET operation_name = 'projects/../tuningJobs/x' WHERE id = :id"),
                {"id": bad.id},
            )

        outcomes = await Purger(context).run_once()

        assert outcomes is not None
        assert [(o.job_id, o.deleted) for o in outcomes] == [(bad.id, False), (good.id, True)]
        assert outcomes[0].error is not None and "operation_name 'projects/../tuningJobs/x'" in outcomes[0].error
        assert good.tuned_endpoint_name is not None and not await endpoint_exists(context, good.tuned_endpoint_name)
        stored = await get_job(store, bad.id)
        assert stored.last_error == outcomes[0].error and stored.purged_at is None
        assert (await get_job(store, good.id)).purged_at is not None
