"""Training files and what a job's errors may carry, through `tunekeeper run` (a real process) on both backends.

A producer may name only files below the daemon's data roots (`[data] roots`), reached without a symbolic link:
another team's private file, a credential behind a `.csv` link, a FIFO are refused at once, with messages that
quote nothing of any file; the daemon keeps working and stops cleanly. Bad `eval_data` ends the job `invalid`
before anything is sent. What the daemon writes to the database passes the log's redactor.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon.test_purge import make_settings, one_pass
from tests.harness import TEST_API_KEY, DaemonProcess, daemon_environment
from tests.jobs import wait_all_terminal
from tests.vertex_daemon.support import PROJECT, emulator_config, vertex_environment, vertex_settings
from tunekeeper.config import Settings
from tunekeeper.daemon.dispatcher import Dispatcher
from tunekeeper.daemon.service import open_context
from tunekeeper.db.engine import make_engine
from tunekeeper.db.records import Job, NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State

PAIRS = [{"text_input": str(n), "output": str(n + 1)} for n in range(8)]
SHADOW_LINE = "root:$6$saltsalt$SHADOWHASHxyz:19000:0:99999:7:::"


@dataclass
class Daemon:
    """How to run the daemon on one backend against one emulator."""

    backend: str
    emulator: Emulator
    env: dict[str, str]

    def creates(self) -> int:
        """Tuning creates the service received, of any job."""
        stats = self.emulator.stats()
        if self.backend == "vertex":
            return int(stats["tuning_creates"]["attempted"])
        return int(stats["requests"]["by_route"].get("tunedModels.create", 0))


@pytest.fixture(params=["gemini", "vertex"])
async def daemon(request: pytest.FixtureRequest, sqlite_url: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    backend: str = request.param
    database_url = sqlite_url  # the database plays no part in reading files
    root = tmp_path / "data"
    (root / "team-a").mkdir(parents=True)
    extra = {"TUNEKEEPER_DATA__ROOTS": json.dumps([str(root)])}
    async with Emulator(emulator_config()) as emulator:
        if backend == "vertex":
            key_file = emulator.write_service_account_file(tmp_path / "vertex-key.json", project=PROJECT)
            env = vertex_environment(database_url, emulator, key_file, extra)
        else:
            env = daemon_environment(database_url, emulator.base_url, extra)
        yield Daemon(backend, emulator, env)


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[JobStore]:
    engine = make_engine(sqlite_url)
    yield JobStore(engine)
    await engine.dispose()


def release(fifo: Path) -> None:
    """Open the FIFO for both ends and close it, so that a reader blocked in open() (old code) returns."""
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    os.close(fd)


async def show_json(env: dict[str, str], job_id: int) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tunekeeper", "show", str(job_id), "--json", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_files_come_from_the_roots_only_and_errors_carry_no_secret(
    daemon: Daemon, store: JobStore, tmp_path: Path
) -> None:
    root = tmp_path / "data" / "team-a"
    (root / "good.jsonl").write_text("".join(json.dumps(pair) + "\n" for pair in PAIRS))
    # Another team's private dataset and a credential file, outside the root, reached through links in it.
    private = tmp_path / "team-b"
    private.mkdir()
    (private / "theirs.jsonl").write_text("".join(json.dumps(pair) + "\n" for pair in PAIRS))
    (private / "theirs.jsonl").chmod(0o600)
    (private / "api-key").write_text(TEST_API_KEY + "\n")
    (root / "borrowed.jsonl").symlink_to(private / "theirs.jsonl")
    (root / "key.csv").symlink_to(private / "api-key")
    # A regular file in the root whose first line is a secret (a shadow line), and a FIFO nobody writes to.
    (root / "shadow.csv").write_text(SHADOW_LINE + "\n1,2\n")
    fifo = root / "pipe.jsonl"
    os.mkfifo(fifo)

    jobs = {
        "good": NewJob("good file", training_file=str(root / "good.jsonl")),
        "borrowed": NewJob("borrowed", training_file=str(root / "borrowed.jsonl")),
        "outside": NewJob("outside", training_file=str(private / "theirs.jsonl")),
        "key": NewJob("key link", training_file=str(root / "key.csv")),
        "shadow": NewJob("shadow", training_file=str(root / "shadow.csv")),
        "fifo": NewJob("fifo", training_file=str(fifo)),
        "bad eval": NewJob("bad eval", training_data=PAIRS, eval_data=[{"text_input": "1", "expected": "2"}]),
        # A request column that quotes the key back (an invalid id is quoted): redacted on its way to the database.
        "quoted key": NewJob("quoted key", training_data=PAIRS, tuned_model_id="X" + TEST_API_KEY),
    }
    ids = {name: await store.add_job(job) for name, job in jobs.items()}
    try:
        async with DaemonProcess(tmp_path, daemon.env) as process:
            found = {job.id: job for job in await wait_all_terminal(store, len(jobs), within=30, daemons=[process])}
            status = await process.stop()
        assert status == 0, process.stderr_text()
    finally:
        release(fifo)
    by_name: dict[str, Job] = {name: found[job_id] for name, job_id in ids.items()}

    assert by_name["good"].state is State.SUCCEEDED, by_name["good"].last_error
    expected = {
        "borrowed": "symbolic link below the data root; links are not followed",
        "outside": "not under a data root ([data] roots)",
        "key": "symbolic link below the data root; links are not followed",
        "shadow": "line 1: the first row must be a header with columns text_input and output",
        "fifo": "pipe.jsonl: not a regular file",
        "bad eval": "eval_data: example 0: unknown key 'expected'",
        "quoted key": "tuned_model_id 'X[redacted]' is not a valid id",
    }
    for name, message in expected.items():
        job = by_name[name]
        assert job.state is State.INVALID, (name, job.state, job.last_error)
        assert job.last_error is not None and message in job.last_error, (name, job.last_error)
    # Only the good job reached the service: the bad eval_data was found before anything was sent.
    assert daemon.creates() == 1

    # Nothing of a file's content, nor the key, in any row, event, log line or `show --json` (but the column the
    # producer wrote the key into, which shows as written: the error and the event quoting it are redacted).
    quoted = by_name["quoted key"]
    events = await store.events(quoted.id)
    assert [event.detail["error"] for event in events if event.kind == "rejected"] == [quoted.last_error]
    for job_id in ids.values():
        if job_id == quoted.id:
            continue
        text = await show_json(daemon.env, job_id)
        for secret in (TEST_API_KEY, "SHADOWHASH", "saltsalt"):
            assert secret not in text, (job_id, text)
    log = process.stdout_text()
    assert TEST_API_KEY not in log and "SHADOWHASH" not in log


@pytest.mark.parametrize("backend", ["gemini", "vertex"])
async def test_without_data_roots_a_file_job_is_invalid_saying_so(
    backend: str, sqlite_url: str, store: JobStore, tmp_path: Path
) -> None:
    """The default: no roots, no files read, whatever the file (here a good one the daemon could read)."""
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps(pair) + "\n" for pair in PAIRS))
    async with Emulator(emulator_config()) as emulator:
        settings: Settings
        if backend == "vertex":
            key_file = emulator.write_service_account_file(tmp_path / "vertex-key.json", project=PROJECT)
            settings = vertex_settings(sqlite_url, emulator, key_file)
        else:
            settings = make_settings(sqlite_url, emulator.base_url)
        assert settings.data.roots == ()
        async with open_context(settings) as context:
            job_id = await store.add_job(NewJob("file job", training_file=str(path)))
            await one_pass(Dispatcher(context))
    job = await store.get_job(job_id)
    assert job is not None and job.state is State.INVALID, job
    assert job.last_error == (
        f"training_file {path}: no data roots are configured ([data] roots), so the daemon reads no training "
        "files: put the examples in training_data, or ask the operator for a data root"
    )
