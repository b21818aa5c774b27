"""What Vertex AI would refuse ends `invalid` with a message naming the problem, before anything is sent: no
training file is uploaded and no tuning job is created for it. What Vertex AI takes (a 128-character display
name, longer than the Gemini API's 40) is not refused on another service's rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.jobs import wait_all_terminal
from tests.vertex_daemon.conftest import BUCKET, pairs, running_service, tuning_creates, vertex_settings
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State

# name -> (the job's request columns, the message its last_error must contain)
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "no output": (
        {"training_data": [{"text_input": "1", "output": "2"}, {"text_input": "3"}]},
        "example 1",
    ),
    "unknown key": (
        {"training_data": [{"text_input": "1", "output": "2", "role": "user"}]},
        "unknown key 'role'",
    ),
    "empty": ({"training_data": []}, "training_data"),
    "name too long": ({"display_name": "n" * 129}, "display_name is 129 characters; the limit is 128"),
    "batch size": ({"batch_size": 4}, "batch_size and learning_rate are not settings of Vertex AI tuning"),
    "learning rate": ({"learning_rate": 0.001}, "batch_size and learning_rate are not settings of Vertex AI tuning"),
}


def job(name: str, **columns: Any) -> NewJob:
    values: dict[str, Any] = {"display_name": name, "training_data": pairs(4), **columns}
    return NewJob(**values)


async def test_jobs_vertex_would_refuse_end_invalid_before_anything_is_sent(
    database_url: str, store: JobStore, vertex_emulator: Emulator, key_file: Path
) -> None:
    emulator = vertex_emulator
    invalid = {name: await store.add_job(job(name, **columns)) for name, (columns, _) in INVALID.items()}
    longest = await store.add_job(job("l" * 128))  # Vertex AI's limit exactly: a good job
    async with running_service(vertex_settings(database_url, emulator, key_file)):
        jobs = {j.id: j for j in await wait_all_terminal(store, len(invalid) + 1, within=30)}

    for name, job_id in invalid.items():
        found = jobs[job_id]
        assert found.state is State.INVALID, (name, found.state, found.last_error)
        assert found.last_error is not None and INVALID[name][1] in found.last_error, (name, found.last_error)
        assert found.operation_name is None and found.training_uri is None, name
        assert tuning_creates(emulator, job_id)["attempted"] == 0, name
    assert jobs[longest].state is State.SUCCEEDED, jobs[longest].last_error
    assert tuning_creates(emulator, longest) == {"attempted": 1, "accepted": 1}

    # Nothing of the invalid jobs reached the service: one upload and one create in all, the good job's.
    stats = emulator.stats()
    assert stats["tuning_creates"]["attempted"] == 1
    assert stats["requests"]["by_route"].get("storage.objects.insert") == 1
    assert stats["storage"][BUCKET]["objects"] == 1
