"""Testing the finished model: a job with eval_data is evaluated by the daemon after it succeeds.

The emulator answers a prompt with the output of the most similar training example, so a pair taken from the
training data matches exactly and an unseen pair cannot: the score is known in advance.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from tests.harness import DaemonProcess, daemon_environment
from tests.jobs import wait_all_terminal
from tests.waiting import wait_until
from tunekeeper.db.records import JobEvent
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State
from tunekeeper.tutorial import NUMBER_PAIRS

TUTORIAL = list(NUMBER_PAIRS)
SEEN = [("1", "2"), ("twenty two", "twenty three"), ("1,000", "1,001"), ("seven", "eight")]
UNSEEN = ("five", "six")  # no training example has the output "six"


def pairs_json(pairs: list[tuple[str, str]]) -> str:
    return json.dumps([{"text_input": text, "output": output} for text, output in pairs])


async def insert_job(store: JobStore, name: str, eval_data: str) -> int:
    """The producer's INSERT, JSON as literal text (no quotes inside it to escape)."""
    assert "'" not in eval_data
    statement = (
        "INSERT INTO tuning_jobs (display_name, training_data, eval_data) "
        f"VALUES ('{name}', '{pairs_json(TUTORIAL)}', '{eval_data}')"
    )
    async with store.engine.begin() as conn:
        await conn.execute(sa.text(statement))
        job_id: int = (
            await conn.execute(sa.text(f"SELECT id FROM tuning_jobs WHERE display_name = '{name}'"))
        ).scalar_one()
    return job_id


async def wait_event(store: JobStore, job_id: int, kinds: set[str], within: float = 20.0) -> JobEvent:
    async def found() -> JobEvent | None:
        return next((e for e in await store.events(job_id) if e.kind in kinds), None)

    return await wait_until(found, within=within, message=f"job {job_id} to record one of {sorted(kinds)}")


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUNEKEEPER_")}
    env["TUNEKEEPER_DATABASE__URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "tunekeeper", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def generate_calls(emulator: Emulator) -> int:
    return int(emulator.stats()["requests"]["by_route"].get("tunedModels.generateContent", 0))


async def test_a_succeeded_job_is_evaluated_and_show_prints_the_results(
    database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    eval_pairs = [*SEEN, UNSEEN]
    async with DaemonProcess(tmp_path, daemon_environment(database_url, emulator.base_url)) as daemon:
        job_id = await insert_job(store, "number generator", pairs_json(eval_pairs))
        event = await wait_event(store, job_id, {"evaluated", "eval_failed"})
        await wait_until(lambda: daemon.events("model_evaluated"), within=5, message="model_evaluated")
        logged = daemon.events("model_evaluated")

    assert event.kind == "evaluated", event.detail
    assert event.detail == {"score": 0.8, "examples": 5}
    job = await store.get_job(job_id)
    assert job is not None and job.state == State.SUCCEEDED
    assert job.eval_score == 0.8
    assert isinstance(job.eval_results, list)
    seen_results = [{"input": text, "expected": output, "output": output, "match": True} for text, output in SEEN]
    assert job.eval_results[:4] == seen_results
    unseen = job.eval_results[4]
    assert (unseen["input"], unseen["expected"], unseen["match"]) == ("five", "six", False)
    assert unseen["output"] in {output for _, output in TUTORIAL}  # a training output, the closest one's
    assert generate_calls(emulator) == len(eval_pairs)
    kinds = [e.kind for e in await store.events(job_id) if e.kind != "progress"]
    assert kinds == ["claimed", "accepted", "succeeded", "evaluated"]
    assert [(line["job_id"], line["score"]) for line in logged] == [(job_id, 0.8)]

    shown = await asyncio.to_thread(run_cli, database_url, "show", str(job_id))
    assert shown.returncode == 0, shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines()]
    assert ["eval", "score", "0.8"] in [line.split() for line in lines], shown.stdout
    assert "eval outputs" in lines
    # One line per pair: its index, match or miss, then the fields (in whatever order the database keeps them).
    outputs = [{part.strip() for part in line.split("  ") if part.strip()} for line in lines]
    for index, (text, output) in enumerate(SEEN):
        assert {str(index), "match", f"input={text}", f"expected={output}", f"output={output}"} in outputs
    assert {"4", "miss", "input=five", "expected=six", f"output={unseen['output']}"} in outputs, shown.stdout


async def test_broken_eval_data_makes_the_job_invalid_before_anything_is_sent(
    database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    broken = {
        "missing output": '[{"text_input": "1"}]',
        "not a list": '{"text_input": "1", "output": "2"}',
    }
    async with DaemonProcess(tmp_path, daemon_environment(database_url, emulator.base_url)) as daemon:
        ids = {name: await insert_job(store, name, data) for name, data in broken.items()}
        found = {job.id: job for job in await wait_all_terminal(store, len(ids), within=30, daemons=[daemon])}
    jobs = {name: found[job_id] for name, job_id in ids.items()}

    for name, job in jobs.items():
        assert job.state == State.INVALID, (name, job.state)
        assert str(job.last_error).startswith("eval_data"), job.last_error
        assert job.eval_score is None and job.eval_results is None
    assert "output" in str(jobs["missing output"].last_error)
    assert "list" in str(jobs["not a list"].last_error)
    # Nothing reached the service: no model was made to be tested with pairs that cannot be used.
    assert "tunedModels.create" not in emulator.stats()["requests"]["by_route"]
    assert generate_calls(emulator) == 0
