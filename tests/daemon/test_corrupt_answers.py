"""Answers mangled on their way back (cut short, not JSON, another type, fields of the wrong type): each is
retried or classified, no job is created twice, every job ends, and the daemon never falls over.

A rule-driven proxy between the daemon and the emulator mangles a seeded share of the successful answers to
creates, operation polls and model reads; the requests themselves took effect on the service.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness import DaemonProcess, daemon_environment
from tests.jobs import wait_all_terminal
from tests.proxy import HoldingProxy
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State

EXAMPLES = [{"text_input": str(n), "output": str(n + 1)} for n in range(10)]
JOBS = 8


async def test_mangled_answers_fail_or_retry_their_job_alone_and_nothing_runs_twice(
    database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    async with HoldingProxy(emulator.base_url) as proxy:
        mangled = [
            proxy.corrupt("POST", r"/tunedModels$", rate=0.4, seed=3),
            proxy.corrupt("GET", r"/operations/", rate=0.3, seed=4),
            proxy.corrupt("GET", r"/tunedModels/[^/]+$", rate=0.3, seed=5),
        ]
        env = daemon_environment(database_url, proxy.base_url, {"TUNEKEEPER_DAEMON__MAX_ATTEMPTS": "6"})
        for n in range(JOBS):
            await store.add_job(NewJob(display_name=f"mangled {n}", training_data=EXAMPLES))
        async with DaemonProcess(tmp_path, env) as daemon:
            jobs = await wait_all_terminal(store, JOBS, within=120, daemons=[daemon])

            assert daemon.running, "the daemon survived every mangled answer"
            assert sum(len(rule.mangled) for rule in mangled) >= 5, "the proxy mangled enough to mean something"
            assert not daemon.events("job_handler_failed"), "a mangled answer reached a handler as a bug"
            by_model = emulator.stats()["creates"]["by_model"]
            assert all(counts["accepted"] <= 1 for counts in by_model.values()), by_model
            finished = {job.state for job in jobs}
            assert finished <= {State.SUCCEEDED, State.FAILED}, finished
            assert State.SUCCEEDED in finished, "retries carried most jobs through"
            for job in jobs:
                if job.state is State.FAILED:
                    assert job.last_error, f"job {job.id} failed without saying why"
