"""Creates that reach the service late, on both tuning services: a submitter that lost its job sends nothing
(the fence), a create answered after its job moved on is undone by its submitter, and a create whose answer was
lost, landing after the job was cancelled, is found by the purger before `purged_at` says that nothing remains.

A rule-driven proxy (tests/proxy.py) sits between the daemon's parts and the emulator and holds the creates:
the emulator's own faults act when a request arrives and cannot make it take effect later. The workers run
in this process one pass at a time (as in test_purge.py), with no lease renewal between passes, which is what a
submitter frozen past its lease looks like to everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.test_purge import make_settings
from tests.proxy import HoldingProxy, Rule
from tests.vertex_daemon.support import BUCKET, client, deployments, emulator_config, vertex_settings
from tests.waiting import wait_until
from tunekeeper.config import Settings
from tunekeeper.daemon.canceller import Canceller
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.dispatcher import Dispatcher
from tunekeeper.daemon.poller import Poller
from tunekeeper.daemon.purger import Purger
from tunekeeper.daemon.service import open_context
from tunekeeper.daemon.worker import JobWorker
from tunekeeper.db.records import Job, NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.db.tables import tuning_jobs
from tunekeeper.emulator import Emulator, EmulatorConfig
from tunekeeper.logs import configure_logging
from tunekeeper.states import State

PAIRS = [{"text_input": str(n), "output": str(n + 1)} for n in range(4)]
WINDOW = timedelta(minutes=10)
ENDED = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
VERTEX_TRAINING_FILE = f"gs://{BUCKET}/producer/numbers.jsonl"  # the producer's own: purge never deletes it


@dataclass
class Service:
    """One tuning service behind the proxy: how to configure the daemon for it, and what it holds."""

    name: str
    emulator: Emulator
    proxy: HoldingProxy
    settings: Callable[..., Settings]
    create: tuple[str, str]  # the create request's method and path pattern

    def remains(self) -> bool:
        """Whether anything a job started is still on the service (each test runs one job of interest)."""
        stats = self.emulator.stats()
        if self.name == "gemini":
            return any(model["deleted_at"] is None for model in stats["models"].values())
        running = [job for job in stats["tuning_jobs"].values() if job["state"] not in ENDED]
        return bool(running) or deployments(self.emulator)["models"] > 0

    def creates_accepted(self) -> int:
        stats = self.emulator.stats()
        key = "creates" if self.name == "gemini" else "tuning_creates"
        return int(stats[key]["accepted"])

    def hold_creates(self, *, drop: bool) -> Rule:
        return self.proxy.hold(*self.create, drop=drop)

    async def new_job(self, context: DaemonContext, name: str) -> int:
        if self.name == "gemini":
            return await context.store.add_job(NewJob(display_name=name, training_data=PAIRS))
        # On Vertex AI a file the producer keeps in Cloud Storage: purge never deletes it, so a late create can
        # still read it (a staged copy would be deleted with the cancelled job's work, and the create refused).
        lines = "".join(
            json.dumps(
                {
                    "contents": [
                        {"role": "user", "parts": [{"text": p["text_input"]}]},
                        {"role": "model", "parts": [{"text": p["output"]}]},
                    ]
                }
            )
            + "\n"
            for p in PAIRS * 4
        )
        await client(context).storage.upload(VERTEX_TRAINING_FILE, lines.encode(), "application/jsonl")
        return await context.store.add_job(NewJob(display_name=name, training_file=VERTEX_TRAINING_FILE))


@pytest.fixture(params=["gemini", "vertex"])
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Service]:
    name: str = request.param
    if name == "gemini":
        config = EmulatorConfig(host="127.0.0.1", port=0, step_seconds=0.01, log_requests=False)
    else:
        config = emulator_config()
    async with Emulator(config) as emulator, HoldingProxy(emulator.base_url) as proxy:
        if name == "gemini":

            def settings(database_url: str, **purge: Any) -> Settings:
                return make_settings(database_url, proxy.base_url, **purge)

            create = ("POST", r"/tunedModels$")
        else:
            key_file = emulator.write_service_account_file(tmp_path / "key.json", project="tk-vertex-proof")

            def settings(database_url: str, **purge: Any) -> Settings:
                vertex = {"base_url": proxy.base_url, "max_retries": 2}
                return vertex_settings(database_url, emulator, key_file, vertex=vertex, **purge)

            create = ("POST", r"/tuningJobs$")
        yield Service(name, emulator, proxy, settings, create)


async def one_pass(worker: JobWorker) -> None:
    for job in await worker.claim(100):
        await worker.handle(job)


async def get(store: JobStore, job_id: int) -> Job:
    job = await store.get_job(job_id)
    assert job is not None
    return job


async def lease_lapsed(store: JobStore, job_id: int) -> None:
    async def lapsed() -> bool:
        job = await get(store, job_id)
        return job.lease_expires_at is not None and job.lease_expires_at < store.clock()

    await wait_until(lapsed, within=10, interval=0.1, message="the submitter's lease to run out")


@contextlib.contextmanager
def captured_log() -> Iterator[Callable[[str], list[dict[str, Any]]]]:
    """The JSON log lines written within the block, by event name."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)

    def events(name: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == name]

    yield events


# ---- the fence ------------------------------------------------------------------------------------------------


async def test_a_submitter_that_lost_its_lease_sends_no_create(
    database_url: str, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    async with (
        open_context(service.settings(database_url)) as stale,
        open_context(service.settings(database_url)) as other,
    ):
        other.owner = "replica-b"
        job_id = await service.new_job(stale, "taken over")
        stale_dispatcher = Dispatcher(stale)
        [claimed] = await stale_dispatcher.claim(10)  # then frozen, before it sends its create
        await lease_lapsed(stale.store, job_id)
        await one_pass(Dispatcher(other))  # another replica takes the job over and creates
        assert (await get(other.store, job_id)).state is State.TUNING
        sent = service.emulator.stats()["requests"]["total"]

        with captured_log() as events:
            await stale_dispatcher.handle(claimed)  # it wakes up

        assert service.emulator.stats()["requests"]["total"] == sent, "the stale submitter sent something"
        assert [line["job_id"] for line in events("create_fenced")] == [job_id]
        assert service.creates_accepted() == 1
        job = await get(stale.store, job_id)
        assert job.state is State.TUNING and job.lease_owner is None


# ---- a create answered after the job moved on -----------------------------------------------------------------


async def test_a_create_answered_after_its_job_was_cancelled_is_undone_by_its_submitter(
    sqlite_url: str, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    async with open_context(service.settings(sqlite_url, enabled=False)) as context:
        store = context.store
        creates = service.hold_creates(drop=False)  # the submitter waits for its answer
        job_id = await service.new_job(context, "cancelled while its create was held")
        dispatching = asyncio.create_task(one_pass(Dispatcher(context)))
        await wait_until(lambda: creates.held, within=10, message="the create to reach the proxy")
        creates.active = False
        await lease_lapsed(store, job_id)  # frozen, as far as everyone else can tell
        await store.request_cancel(job_id)
        canceller = Canceller(context)

        async def cancelled() -> bool:
            await one_pass(canceller)
            return (await get(store, job_id)).state is State.CANCELLED

        await wait_until(cancelled, within=10, interval=0.1, message="the job to be cancelled")
        assert not service.remains()

        with captured_log() as events:
            await service.proxy.release(creates.held[0])  # the create lands now, and its answer comes back
            await dispatching

        assert service.creates_accepted() == 1  # it did land
        assert not service.remains(), "the late create's work was left on the service"
        [undone] = events("late_create_undone")
        assert (undone["job_id"], undone["state"], undone["removed"]) == (job_id, "cancelled", True)
        job = await get(store, job_id)
        assert job.state is State.CANCELLED and job.operation_name is None


# ---- a create whose answer was lost, landing after the cancel --------------------------------------------------


async def test_a_lost_create_landing_after_the_cancel_is_purged_before_purged_at_is_set(
    sqlite_url: str, service: Service
) -> None:
    async with open_context(service.settings(sqlite_url, late_create_window=WINDOW)) as context:
        store = context.store
        creates = service.hold_creates(drop=True)  # each create's connection drops: no answer
        job_id = await service.new_job(context, "its create landed late")
        await one_pass(Dispatcher(context))
        queued = await get(store, job_id)
        assert (queued.state, queued.attempts) == (State.QUEUED, 1), queued.last_error  # to be retried
        assert creates.held
        creates.active = False

        await store.request_cancel(job_id)
        await one_pass(Canceller(context))
        cancelled = await get(store, job_id)
        assert cancelled.state is State.CANCELLED
        # Nothing on the service yet, but a create is still on its way: not known gone.
        assert not service.remains()
        assert cancelled.purged_at is None

        [first] = await Purger(context).run_once() or []
        assert cancelled.finished_at is not None
        assert (first.job_id, first.deleted, first.recheck_until) == (job_id, False, cancelled.finished_at + WINDOW)
        assert (await get(store, job_id)).purged_at is None

        await service.proxy.release(creates.held[0])  # the lost create lands
        await wait_until(service.remains, within=10, message="the late create's work to appear")
        if service.name == "vertex":  # let it leave its model: the purge must find that too
            await wait_until(lambda: deployments(service.emulator)["models"] > 0, within=10, message="the model")

        [second] = await Purger(context).run_once() or []
        assert (second.job_id, second.deleted, second.error) == (job_id, True, None)
        assert not service.remains()
        done = await get(store, job_id)
        assert done.state is State.CANCELLED and done.purged_at is not None

        # Once the window has passed, nothing there is final: a job whose late create never came is purged.
        other = await service.new_job(context, "its create never landed")
        creates.active = True
        await one_pass(Dispatcher(context))
        creates.active = False
        await store.request_cancel(other)
        await one_pass(Canceller(context))
        async with store.engine.begin() as conn:
            await conn.execute(
                tuning_jobs.update()
                .where(tuning_jobs.c.id == other)
                .values(finished_at=store.clock() - WINDOW - timedelta(seconds=1))
            )
        [third] = await Purger(context).run_once() or []
        assert (third.job_id, third.deleted, third.already_gone) == (other, False, True)
        assert (await get(store, other)).purged_at is not None


@pytest.mark.parametrize("service", ["vertex"], indirect=True)  # the Gemini API's fixed model id makes it a 409
async def test_a_second_tuning_job_from_a_submitter_that_lost_its_job_is_cancelled(
    sqlite_url: str, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    async with (
        open_context(service.settings(sqlite_url, enabled=False)) as stale,
        open_context(service.settings(sqlite_url, enabled=False)) as other,
    ):
        other.owner = "replica-b"
        creates = service.hold_creates(drop=False)
        job_id = await service.new_job(stale, "created twice")
        dispatching = asyncio.create_task(one_pass(Dispatcher(stale)))
        await wait_until(lambda: creates.held, within=10, message="the stale create to reach the proxy")
        creates.active = False
        await lease_lapsed(stale.store, job_id)
        await one_pass(Dispatcher(other))  # takes the job over: finds no tuning job yet, and creates one
        followed = await get(other.store, job_id)
        assert followed.state is State.TUNING and followed.operation_name is not None

        service.emulator.configure(step_seconds=1)  # the second job still runs when its submitter hears of it
        with captured_log() as events:
            await service.proxy.release(creates.held[0])  # the stale create lands: a second tuning job
            await dispatching

        assert service.creates_accepted() == 2
        tuning_jobs_now = service.emulator.stats()["tuning_jobs"]
        [duplicate] = [name for name in tuning_jobs_now if name != followed.operation_name]
        assert tuning_jobs_now[duplicate]["state"] == "JOB_STATE_CANCELLED"
        assert tuning_jobs_now[followed.operation_name]["state"] != "JOB_STATE_CANCELLED"
        [undone] = events("late_create_undone")
        assert (undone["job_id"], undone["operation"], undone["removed"]) == (job_id, duplicate, False)
        assert (await get(stale.store, job_id)).operation_name == followed.operation_name  # still followed


# ---- a row deleted by a producer while its job tunes ----------------------------------------------------------


async def test_a_row_deleted_while_tuning_is_a_warning_and_its_model_an_orphan_the_purger_removes(
    sqlite_url: str, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    settings = service.settings(sqlite_url)
    assert settings.purge.orphans, "the orphan purge is on by default"
    async with open_context(settings) as context:
        store = context.store
        job_id = await service.new_job(context, "deleted while tuning")
        await one_pass(Dispatcher(context))
        assert (await get(store, job_id)).state is State.TUNING
        poller = Poller(context)
        claimed = await wait_until(lambda: poller.claim(10), within=10, message="a poll to fall due")
        async with store.engine.begin() as conn:  # a producer deletes the row while the poll is in flight
            await conn.execute(tuning_jobs.delete().where(tuning_jobs.c.id == job_id))

        with captured_log() as events:
            for job in claimed:
                await poller.handle(job)

        assert [line["job_id"] for line in events("job_row_gone")] == [job_id]
        if service.name == "vertex":  # a tuning job is listed with its model once it has one
            await wait_until(lambda: deployments(service.emulator)["models"] > 0, within=10, message="the model")
        assert service.remains()
        outcomes = await Purger(context).run_once()
        assert outcomes is not None
        assert [(o.policy.value, o.job_id, o.deleted) for o in outcomes] == [("orphan", None, True)]
        assert not service.remains()
