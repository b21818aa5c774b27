"""Jobs inserted by plain SQL reach Vertex AI through `tunekeeper run` (a real process), and come back tuned,
deployed and evaluated; jobs Vertex AI would refuse end `invalid` before anything is sent.

The producer is the database's own command-line tool (sqlite3, psql), as in tests/daemon/test_intake.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.test_intake import command_line_client
from tests.harness import DaemonProcess
from tests.jobs import check_history, wait_all_terminal
from tests.vertex_daemon.conftest import (
    BUCKET,
    LOCATION,
    PROJECT,
    STAGING_URI,
    job_of,
    pairs,
    tuning_creates,
    vertex_environment,
)
from tests.waiting import wait_until
from tunekeeper.db.records import Job
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State, Transition

PARENT = f"projects/{PROJECT}/locations/{LOCATION}"


def insert(database_url: str, name: str, training_data: str, eval_data: str | None = None) -> None:
    """One plain INSERT, as the README shows it (plus eval_data when given)."""
    assert "'" not in name + training_data + (eval_data or "")
    if eval_data is None:
        statement = f"INSERT INTO tuning_jobs (display_name, training_data) VALUES ('{name}', '{training_data}');\n"
    else:
        statement = (
            "INSERT INTO tuning_jobs (display_name, training_data, eval_data) "
            f"VALUES ('{name}', '{training_data}', '{eval_data}');\n"
        )
    command = command_line_client(database_url)
    if shutil.which(command[0]) is None:
        pytest.skip(f"the {command[0]} command-line tool is not installed")
    done = subprocess.run(command, input=statement, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr


async def test_a_plain_sql_job_is_tuned_deployed_and_evaluated_on_vertex(
    database_url: str, store: JobStore, vertex_emulator: Emulator, key_file: Path, tmp_path: Path
) -> None:
    emulator = vertex_emulator
    # The eval set: two inputs the model was tuned on (it answers them right) and one it gets wrong on purpose.
    evaluation = [
        {"text_input": "3", "output": "4"},
        {"text_input": "7", "output": "8"},
        {"text_input": "1", "output": "9"},
    ]
    insert(database_url, "number generator", json.dumps(pairs(10)), json.dumps(evaluation))
    env = vertex_environment(database_url, emulator, key_file)
    async with DaemonProcess(tmp_path, env) as daemon:
        [job] = await wait_all_terminal(store, 1, within=30, daemons=[daemon])
        assert job.state is State.SUCCEEDED, job.last_error

        async def evaluated() -> Job | None:
            found = await job_of(store, job.id)
            return found if found.eval_score is not None else None

        job = await wait_until(evaluated, within=15, message="the evaluation to be recorded")
        await daemon.wait_for_events("model_evaluated", lambda line: line.get("job_id") == job.id)
        assert await daemon.stop() == 0

    # The row names everything Vertex AI made for it, and which backend made it.
    assert job.backend == "vertex"
    assert job.operation_name is not None and job.operation_name.startswith(f"{PARENT}/tuningJobs/")
    assert job.tuned_model_name is not None and job.tuned_model_name.startswith(f"{PARENT}/models/")
    assert job.tuned_model_name.endswith("@1")
    assert job.tuned_endpoint_name is not None and job.tuned_endpoint_name.startswith(f"{PARENT}/endpoints/")
    assert job.training_uri == f"{STAGING_URI}/{await store.deployment_id()}/{job.id}/train.jsonl"
    assert job.sub_state is None
    assert job.progress_percent == 100.0
    assert job.last_error is None

    # One tuning job, and it is the one the row names; the training file was staged in the bucket.
    stats = emulator.stats()
    assert tuning_creates(emulator, job.id) == {"attempted": 1, "accepted": 1}
    assert stats["tuning_jobs"][job.operation_name]["state"] == "JOB_STATE_SUCCEEDED"
    assert stats["storage"][BUCKET]["objects"] == 1

    # The evaluation asked the endpoint (not the model) each eval pair: two right, one wrong.
    assert stats["deployments"]["generate_calls_by_endpoint"] == {job.tuned_endpoint_name: len(evaluation)}
    assert job.eval_score == 2 / 3
    assert isinstance(job.eval_results, list)
    assert [(r["input"], r["output"], r["match"]) for r in job.eval_results] == [
        ("3", "4", True),
        ("7", "8", True),
        ("1", "2", False),
    ]

    events = await store.events(job.id)
    check_history(job, events)
    [accepted] = [event for event in events if event.kind == Transition.ACCEPTED]
    assert accepted.detail["adopted"] is False

    # `tunekeeper show ID --json` gives the endpoint's full name, for users to call.
    shown = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tunekeeper",
        "show",
        str(job.id),
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await shown.communicate()
    assert shown.returncode == 0, stderr.decode()
    document = json.loads(stdout)
    assert document["tuned_endpoint_name"] == job.tuned_endpoint_name
    assert document["tuned_model_name"] == job.tuned_model_name
    assert document["backend"] == "vertex"
    assert document["training_uri"] == job.training_uri
    assert [event["kind"] for event in document["events"] if event["to_state"]] == [
        "claimed",
        "accepted",
        "succeeded",
    ]
