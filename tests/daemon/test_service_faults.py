"""How the daemon spends jobs' attempts and the service's budget when the service misbehaves, on both services:
a revoked key pauses dispatching until it works again, an outage opens the dispatch breaker instead of failing
queued jobs, an evaluation longer than the lease runs once, and eval_data is capped and rate-limited.

Each test runs a real `tunekeeper run` against the emulator, whose faults (`credentials_revoked`, 503s, latency)
are switched at run time as an operator's service would misbehave.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import DaemonProcess, daemon_environment
from tests.jobs import check_history, wait_all_terminal
from tests.vertex_daemon.conftest import PROJECT, emulator_config, vertex_environment
from tests.waiting import wait_until
from tunekeeper.db.engine import make_engine
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State

BACKENDS = ["gemini", "vertex"]
# Short breaker timings, and one retry per call, so that a failing create reaches the dispatcher at once. With
# 3 failures in a row opening the breaker, at most 2 are charged before it opens: no job can reach 3 attempts
# by the outage, and without the breaker each would within a second.
BREAKER = {
    "TUNEKEEPER_DAEMON__BREAKER_FAILURES": "3",
    "TUNEKEEPER_DAEMON__BREAKER_MIN_WAIT": "0.2",
    "TUNEKEEPER_DAEMON__BREAKER_MAX_WAIT": "0.4",
    "TUNEKEEPER_DAEMON__MAX_ATTEMPTS": "3",
    "TUNEKEEPER_GEMINI__MAX_RETRIES": "1",
    "TUNEKEEPER_VERTEX__MAX_RETRIES": "1",
}


def training_pairs(count: int = 8) -> list[dict[str, str]]:
    return [{"text_input": str(n), "output": str(n + 1)} for n in range(count)]


@contextlib.asynccontextmanager
async def service_and_daemon(
    backend: str, database_url: str, tmp_path: Path, env: Mapping[str, str], **emulator: Any
) -> AsyncIterator[tuple[Emulator, DaemonProcess]]:
    """The emulator playing `backend` and a daemon pointed at it, with `env` on top of the harness's settings."""
    async with Emulator(emulator_config(**emulator)) as emu:
        if backend == "vertex":
            key_file = emu.write_service_account_file(tmp_path / "vertex-key.json", project=PROJECT)
            environment = vertex_environment(database_url, emu, key_file, extra=env)
        else:
            environment = daemon_environment(database_url, emu.base_url, env)
        async with DaemonProcess(tmp_path, environment) as daemon:
            yield emu, daemon


def creates_by_job(emu: Emulator, backend: str) -> dict[str, dict[str, int]]:
    """Creates attempted and accepted, per job (Vertex AI: by its job label) or per model id (Gemini API)."""
    stats = emu.stats()
    if backend == "vertex":
        labels = stats["tuning_creates"]["by_label"]
        return {label: counts for label, counts in labels.items() if label.startswith("tunekeeper-job=")}
    return dict(stats["creates"]["by_model"])


def creates_attempted(emu: Emulator, backend: str) -> int:
    stats = emu.stats()
    return int(stats["tuning_creates" if backend == "vertex" else "creates"]["attempted"])


def generate_calls(emu: Emulator) -> int:
    stats = emu.stats()
    gemini = int(stats["requests"]["by_route"].get("tunedModels.generateContent", 0))
    return gemini + int(stats["deployments"]["generate_calls"])


async def readiness(daemon: DaemonProcess) -> tuple[int, dict[str, bool]]:
    base = daemon.events("daemon_started")[0]["http"]
    async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as response:
        return response.status, (await response.json())["checks"]


async def metric(daemon: DaemonProcess, line_start: str) -> float:
    base = daemon.events("daemon_started")[0]["http"]
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as response:
        text = await response.text()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start))


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[JobStore]:
    """The breaker and the limits are the daemon's, not the database's: these tests run on SQLite only."""
    engine = make_engine(sqlite_url)
    yield JobStore(engine)
    await engine.dispose()


async def add_jobs(store: JobStore, count: int, **fields: Any) -> list[int]:
    return [
        await store.add_job(NewJob(display_name=f"job {n}", training_data=training_pairs(), **fields))
        for n in range(count)
    ]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_revoked_key_pauses_dispatching_and_no_job_fails(
    backend: str, sqlite_url: str, sqlite_store: JobStore, tmp_path: Path
) -> None:
    store = sqlite_store
    async with service_and_daemon(backend, sqlite_url, tmp_path, BREAKER) as (emu, daemon):
        emu.configure(credentials_revoked=True)
        ids = await add_jobs(store, 6)
        await daemon.wait_for_events("dispatch_paused", lambda line: line["reason"] == "credentials")
        # The key is checked again with back-off (a cheap read, no job is sent for it) and refused each time.
        await daemon.wait_for_events("dispatch_probe_failed", lambda line: len(daemon.events(line["event"])) >= 3)
        status, checks = await readiness(daemon)
        assert (status, checks["credentials"], checks["service"]) == (503, False, True)
        assert await metric(daemon, 'tunekeeper_dispatch_paused{reason="credentials"}') == 1.0
        jobs = await store.list_jobs(limit=100)
        assert all(job.state == State.QUEUED for job in jobs), [(job.id, job.state, job.last_error) for job in jobs]
        assert all(job.attempts <= 1 for job in jobs)  # attempts refunded: none spent on the key's problem
        assert creates_attempted(emu, backend) <= len(ids)  # the first round at most; none while paused

        emu.configure(credentials_revoked=False)
        finished = await wait_all_terminal(store, len(ids), within=30, daemons=[daemon])
        await daemon.wait_for_events("dispatch_resumed", lambda line: line["reason"] == "credentials")
        status, checks = await readiness(daemon)
        assert status == 200 and checks["credentials"]
        assert await metric(daemon, 'tunekeeper_dispatch_paused{reason="credentials"}') == 0.0
    assert [job.state for job in finished] == [State.SUCCEEDED] * len(ids)
    for job in finished:
        check_history(job, await store.events(job.id))
    assert all(counts["accepted"] <= 1 for counts in creates_by_job(emu, backend).values())


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_outage_opens_the_breaker_instead_of_failing_queued_jobs(
    backend: str, sqlite_url: str, sqlite_store: JobStore, tmp_path: Path
) -> None:
    store = sqlite_store
    async with service_and_daemon(backend, sqlite_url, tmp_path, BREAKER, faults={"503": 1.0}) as (emu, daemon):
        ids = await add_jobs(store, 8)
        await daemon.wait_for_events("dispatch_paused", lambda line: line["reason"] == "service_unavailable")
        # Each probe is one job's create; the outage goes on through several of them, past max_attempts (3).
        await daemon.wait_for_events(
            "dispatch_probe_failed", lambda line: len(daemon.events(line["event"])) >= 4, within=20
        )
        status, checks = await readiness(daemon)
        assert (status, checks["service"], checks["credentials"]) == (503, False, True)
        assert await metric(daemon, 'tunekeeper_dispatch_paused{reason="service_unavailable"}') == 1.0
        jobs = await store.list_jobs(limit=100)
        assert not [job for job in jobs if job.state == State.FAILED], [(j.id, j.last_error) for j in jobs]

        emu.set_faults({"503": 0.0})
        finished = await wait_all_terminal(store, len(ids), within=30, daemons=[daemon])
        await daemon.wait_for_events("dispatch_resumed", lambda line: line["reason"] == "service_unavailable")
        status, checks = await readiness(daemon)
        assert status == 200 and checks["service"]
    assert [job.state for job in finished] == [State.SUCCEEDED] * len(ids)
    for job in finished:
        check_history(job, await store.events(job.id))
    assert all(counts["accepted"] <= 1 for counts in creates_by_job(emu, backend).values())


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_evaluation_longer_than_the_lease_runs_once(
    backend: str, database_url: str, store: JobStore, tmp_path: Path
) -> None:
    eval_pairs = training_pairs(30)
    env = {"TUNEKEEPER_DAEMON__LEASE_SECONDS": "2", "TUNEKEEPER_EVAL__CONCURRENCY": "2"}
    # Every request takes 0.2 s: 30 generate calls two at a time take 3 s, longer than the lease.
    async with service_and_daemon(backend, database_url, tmp_path, env, latency=(0.2, 0.2)) as (emu, daemon):
        (job_id,) = [
            await store.add_job(NewJob(display_name="slow eval", training_data=eval_pairs, eval_data=eval_pairs))
        ]

        async def evaluated() -> list[Any]:
            return [event for event in await store.events(job_id) if event.kind in ("evaluated", "eval_failed")]

        first = await wait_until(evaluated, within=30, message="the evaluation")
        # A second evaluation would have started half-way through the first and sent calls of its own by now.
        assert generate_calls(emu) == len(eval_pairs)
        assert await daemon.stop() == 0  # drains what is in flight: a second evaluation would finish here
    events = await evaluated()
    assert [event.kind for event in events] == ["evaluated"], first
    assert events[0].detail == {"score": 1.0, "examples": len(eval_pairs)}
    assert generate_calls(emu) == len(eval_pairs)
    assert len(daemon.events("model_evaluated")) == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_eval_data_beyond_the_limits_makes_the_job_invalid_before_anything_is_sent(
    backend: str, sqlite_url: str, sqlite_store: JobStore, tmp_path: Path
) -> None:
    store = sqlite_store
    env = {"TUNEKEEPER_EVAL__MAX_PAIRS": "3", "TUNEKEEPER_EVAL__MAX_INPUT_CHARS": "20"}
    async with service_and_daemon(backend, sqlite_url, tmp_path, env) as (emu, daemon):
        too_many = await store.add_job(
            NewJob(display_name="many pairs", training_data=training_pairs(), eval_data=training_pairs(4))
        )
        too_long = await store.add_job(
            NewJob(
                display_name="long inputs",
                training_data=training_pairs(),
                eval_data=[{"text_input": "x" * 15, "output": "1"}, {"text_input": "y" * 6, "output": "2"}],
            )
        )
        within = await store.add_job(
            NewJob(display_name="within", training_data=training_pairs(), eval_data=training_pairs(3))
        )
        jobs = await wait_all_terminal(store, 3, within=30, daemons=[daemon])
        await wait_until(lambda: generate_calls(emu) == 3, message="the evaluation within the limits")
    by_id = {job.id: job for job in jobs}
    assert by_id[too_many].state == State.INVALID
    assert by_id[too_many].last_error == "eval_data has 4 pairs; the limit is 3 (eval.max_pairs)"
    assert by_id[too_long].state == State.INVALID
    assert by_id[too_long].last_error == (
        "eval_data's inputs have 21 characters in all; the limit is 20 (eval.max_input_chars)"
    )
    assert by_id[within].state == State.SUCCEEDED
    # Found before anything was sent: the refused jobs never reached the service.
    assert creates_attempted(emu, backend) == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_evaluation_calls_take_their_share_of_the_request_budget(
    backend: str, sqlite_url: str, sqlite_store: JobStore, tmp_path: Path
) -> None:
    store = sqlite_store
    # 600 requests a minute, in bursts of a second's worth (10): 40 generate calls take at least 3 s.
    eval_pairs = training_pairs(40)
    env = {"TUNEKEEPER_GEMINI__REQUESTS_PER_MINUTE": "600", "TUNEKEEPER_VERTEX__REQUESTS_PER_MINUTE": "600"}
    async with service_and_daemon(backend, sqlite_url, tmp_path, env) as (emu, _daemon):
        job_id = await store.add_job(NewJob(display_name="big eval", training_data=eval_pairs, eval_data=eval_pairs))

        async def kinds() -> dict[str, Any]:
            events = {event.kind: event for event in await store.events(job_id)}
            return events if "evaluated" in events or "eval_failed" in events else {}

        events = await wait_until(kinds, within=30, message="the evaluation")
    assert events["evaluated"].detail["examples"] == len(eval_pairs)
    assert generate_calls(emu) == len(eval_pairs)
    # The bucket is full when the evaluation starts (the create's token leaked away while the model tuned).
    waited = (events["evaluated"].at - events["succeeded"].at).total_seconds()
    assert waited >= 2.0, waited
