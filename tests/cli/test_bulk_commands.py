"""cancel and retry on several jobs (by id, or by state, label and age), and `jobs --watch`, `--since`, `--label`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from tests.cli.conftest import Cli
from tests.cli.seeding import in_store, seed_job
from tests.waiting import wait_until
from tunekeeper.db.store import JobStore
from tunekeeper.states import State


def seed(url: str, state: State, name: str = "job", **request: object) -> int:
    return in_store(url, lambda store: seed_job(store, state, name, **request))


def states(url: str) -> dict[int, tuple[State, bool]]:
    jobs = in_store(url, lambda store: store.list_jobs(limit=1000))
    return {job.id: (job.state, job.cancel_requested) for job in jobs}


def age(url: str, job_id: int, days: int) -> None:
    """Move a job's creation `days` into the past."""

    async def update(store: JobStore) -> None:
        at = datetime.now(UTC) - timedelta(days=days)
        async with store.engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE tuning_jobs SET created_at = :at WHERE id = :id"), {"at": at, "id": job_id}
            )

    in_store(url, update)


def test_cancel_several_ids_with_yes(cli: Cli, sqlite_url: str) -> None:
    first, second = seed(sqlite_url, State.TUNING), seed(sqlite_url, State.QUEUED)
    result = cli("cancel", str(first), str(second), "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"cancel requested for job {first} (tuning); the daemon will cancel it",
        f"cancel requested for job {second} (queued); the daemon will cancel it",
    ]
    assert states(sqlite_url) == {first: (State.TUNING, True), second: (State.QUEUED, True)}


def test_several_jobs_without_yes_and_without_a_terminal_are_left_alone(cli: Cli, sqlite_url: str) -> None:
    first, second = seed(sqlite_url, State.TUNING), seed(sqlite_url, State.QUEUED)
    result = cli("cancel", str(first), str(second))
    assert result.returncode == 1
    assert result.stderr == "cancel: nothing done (2 jobs selected; --yes acts without asking)\n"
    assert states(sqlite_url) == {first: (State.TUNING, False), second: (State.QUEUED, False)}


def test_cancel_by_state_and_label_with_json(cli: Cli, sqlite_url: str) -> None:
    ml_tuning = seed(sqlite_url, State.TUNING, labels={"team": "ml"})
    web_tuning = seed(sqlite_url, State.TUNING, labels={"team": "web"})
    ml_queued = seed(sqlite_url, State.QUEUED, labels={"team": "ml"})

    result = cli("cancel", "--state", "tuning", "queued", "--label", "team=ml", "--yes", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(entry["id"], entry["outcome"], entry["state"], entry["ok"]) for entry in report] == [
        (ml_tuning, "requested", "tuning", True),
        (ml_queued, "requested", "queued", True),
    ]
    assert states(sqlite_url)[web_tuning] == (State.TUNING, False)


def test_a_filter_that_matches_nothing(cli: Cli, sqlite_url: str) -> None:
    seed(sqlite_url, State.TUNING, labels={"team": "web"})
    result = cli("cancel", "--label", "team=ml", "--json")
    assert (result.returncode, json.loads(result.stdout)) == (0, [])
    assert result.stderr == "cancel: no job matches\n"


def test_ids_and_a_filter_together_or_neither_are_refused(cli: Cli, sqlite_url: str) -> None:
    job_id = seed(sqlite_url, State.TUNING)
    both = cli("cancel", str(job_id), "--state", "tuning")
    assert (both.returncode, both.stderr) == (1, "cancel: give ids or a filter (--state, --label, --since), not both\n")
    neither = cli("retry")
    assert neither.returncode == 1
    assert neither.stderr.startswith("retry: which jobs?")
    assert states(sqlite_url) == {job_id: (State.TUNING, False)}


def test_retry_by_state_reports_each_new_id(cli: Cli, sqlite_url: str) -> None:
    failed = [seed(sqlite_url, State.FAILED), seed(sqlite_url, State.FAILED)]
    succeeded = seed(sqlite_url, State.SUCCEEDED)

    result = cli("retry", "--state", "failed", "--yes", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [entry["id"] for entry in report] == failed
    copies = [entry["retried_as"] for entry in report]
    now = states(sqlite_url)
    assert all(now[copy] == (State.QUEUED, False) for copy in copies)
    assert succeeded not in copies


def test_retry_of_several_with_one_refused_exits_1(cli: Cli, sqlite_url: str) -> None:
    failed, tuning = seed(sqlite_url, State.FAILED), seed(sqlite_url, State.TUNING)
    result = cli("retry", str(failed), str(tuning), "--yes")
    assert result.returncode == 1
    assert result.stdout.startswith(f"job {failed} queued again as job ")
    assert result.stderr == f"job {tuning} is tuning; only failed, invalid or cancelled jobs can be retried\n"


def test_jobs_since_and_label(cli: Cli, sqlite_url: str) -> None:
    old = seed(sqlite_url, State.QUEUED, name="old one", labels={"team": "ml"})
    new = seed(sqlite_url, State.QUEUED, name="new one", labels={"team": "web"})
    age(sqlite_url, old, days=3)

    recent = json.loads(cli("jobs", "--since", "2d", "--json").stdout)
    assert [job["id"] for job in recent] == [new]
    by_time = json.loads(cli("jobs", "--since", (datetime.now(UTC) - timedelta(days=4)).isoformat(), "--json").stdout)
    assert [job["id"] for job in by_time] == [new, old]
    labelled = json.loads(cli("jobs", "--label", "team=ml", "--json").stdout)
    assert [job["id"] for job in labelled] == [old]
    bad = cli("jobs", "--since", "yesterday")
    assert bad.returncode == 2
    assert "expected an ISO 8601 time or an age such as 2h or 7d" in bad.stderr


async def test_jobs_watch_redraws_until_interrupted(sqlite_url: str, tmp_path: Path) -> None:
    seed(sqlite_url, State.QUEUED, name="first job")
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUNEKEEPER_")}
    env["TUNEKEEPER_DATABASE__URL"] = sqlite_url
    watch = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tunekeeper", "jobs", "--watch", "0.2",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert watch.stdout is not None and watch.stderr is not None
    output: list[str] = []

    async def read(stream: asyncio.StreamReader) -> None:
        async for line in stream:
            output.append(line.decode())

    reader = asyncio.create_task(read(watch.stdout))
    try:
        frames = lambda: sum("tunekeeper jobs" in line for line in output)  # noqa: E731
        await wait_until(lambda: frames() >= 2, within=30, message="two frames")
        assert any("first job" in line for line in output)
        seed(sqlite_url, State.QUEUED, name="second job")
        await wait_until(lambda: any("second job" in line for line in output), within=30, message="the new job")
    finally:
        watch.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            status = await watch.wait()
            await reader
    assert status == 0, (await watch.stderr.read()).decode()
