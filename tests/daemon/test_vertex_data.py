"""Training data as Vertex AI users have it, and jobs that run too long, through the daemon's own workers
against the emulator.

Vertex's `contents` form (multi-turn, with a system instruction) inline and in a .jsonl file, a gs:// training
file used where it is (never copied, never purged), Vertex's limits checked before anything is uploaded, and
the Gemini backend refusing what its service cannot take. Then vertex.give_up_after: the store's clock (the
daemon's "now") is moved ahead, so the real poller meets a job that has run for days. Workers run in this
process, one pass at a time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.daemon.test_purge import make_settings, one_pass
from tests.harness import TEST_API_KEY
from tests.waiting import wait_until
from tunekeeper.config import Settings
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.dispatcher import Dispatcher
from tunekeeper.daemon.poller import Poller
from tunekeeper.daemon.purger import Purger
from tunekeeper.daemon.service import open_context
from tunekeeper.db.records import Job, NewJob
from tunekeeper.db.store import utcnow
from tunekeeper.db.tables import tuning_jobs
from tunekeeper.emulator import Emulator, EmulatorConfig
from tunekeeper.states import State

PROJECT = "tk-project"
STAGE = "tk-stage"
USER_BUCKET = "tk-user-data"
PAIRS = [{"text_input": str(n), "output": str(n + 1)} for n in range(4)]
# Text no message may ever show: examples' content stays out of errors.
SECRET = "zebra-quartz-"


def turn(role: str, *texts: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"text": text} for text in texts]}


def chat(number: int, *, system: str | None = None, exchanges: int = 2) -> dict[str, Any]:
    """A conversation of `exchanges` user/model exchanges, optionally with a system instruction."""
    contents = []
    for step in range(exchanges):
        contents += [turn("user", f"q{number}.{step}"), turn("model", f"a{number}.{step}", " (sure)")]
    example: dict[str, Any] = {"contents": contents}
    if system is not None:
        example["systemInstruction"] = {"parts": [{"text": system}]}
    return example


CHATS = [chat(n, system="Answer briefly." if n % 2 else None) for n in range(4)]


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    config = EmulatorConfig(step_seconds=0.01, log_requests=False, buckets=frozenset({STAGE, USER_BUCKET}))
    async with Emulator(config) as emu:
        yield emu


def vertex_settings(database_url: str, emulator: Emulator, key_file: Path) -> Settings:
    return Settings(
        backend="vertex",
        database={"url": database_url, "listen": False},
        vertex={
            "project": PROJECT,
            "base_url": emulator.base_url,
            "storage_url": emulator.base_url,
            "credentials_file": str(key_file),
            "staging_uri": f"gs://{STAGE}/tk",
            "max_active_jobs": 100,
            "creates_per_minute": 6000,
            "requests_per_minute": 600000,
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.2,
        },
        daemon={"lease_seconds": 3},
        poll={"min_interval": 0.05, "max_interval": 0.2, "min_step_seconds": 0},
        data={"roots": [str(key_file.parent)]},  # the test's directory, where its training files are
    )


@pytest.fixture
async def vertex(sqlite_url: str, emulator: Emulator, tmp_path: Path) -> AsyncIterator[DaemonContext]:
    key_file = emulator.write_service_account_file(tmp_path / "key.json", project=PROJECT)
    async with open_context(vertex_settings(sqlite_url, emulator, key_file)) as context:
        yield context


@pytest.fixture
async def gemini(sqlite_url: str, emulator: Emulator) -> AsyncIterator[DaemonContext]:
    settings = make_settings(sqlite_url, emulator.base_url)
    assert settings.gemini.api_key == SecretStr(TEST_API_KEY)
    async with open_context(settings) as context:
        yield context


async def submit(context: DaemonContext, **columns: Any) -> Job:
    """Add a job and run one dispatcher pass over it; the job as the pass left it."""
    job_id = await context.store.add_job(NewJob(display_name="vertex data", **columns))
    await one_pass(Dispatcher(context))
    job = await context.store.get_job(job_id)
    assert job is not None
    return job


async def finish(context: DaemonContext, job: Job) -> Job:
    """Poll the job until the service has finished it; it must succeed."""
    poller = Poller(context)

    async def done() -> Job | None:
        await one_pass(poller)
        now = await context.store.get_job(job.id)
        assert now is not None and now.state in (State.TUNING, State.SUCCEEDED), (now and now.state, now.last_error)
        return now if now.state is State.SUCCEEDED else None

    return await wait_until(done, within=15, message=f"job {job.id} to succeed")


def staged_lines(emulator: Emulator, job: Job) -> list[dict[str, Any]]:
    assert job.training_uri is not None and job.training_uri.startswith(f"gs://{STAGE}/tk/")
    name = job.training_uri.removeprefix(f"gs://{STAGE}/")
    data = emulator.state.storage.get(STAGE, name).data
    return [json.loads(line) for line in data.decode().splitlines()]


def creates(emulator: Emulator) -> int:
    by_label: dict[str, dict[str, int]] = emulator.stats()["tuning_creates"]["by_label"]
    return sum(counts["attempted"] for label, counts in by_label.items() if label.startswith("tunekeeper-job="))


def stage_objects(emulator: Emulator) -> int:
    objects: int = emulator.stats()["storage"][STAGE]["objects"]
    return objects


# ---- the forms Vertex users have ---------------------------------------------------------------------------------


async def test_inline_contents_are_staged_as_given_and_tuned(vertex: DaemonContext, emulator: Emulator) -> None:
    job = await submit(vertex, training_data=CHATS)
    assert job.state is State.TUNING, job.last_error
    # Multi-turn conversations and system instructions reach the service as the producer wrote them.
    assert staged_lines(emulator, job) == CHATS
    done = await finish(vertex, job)
    assert done.tuned_endpoint_name is not None


async def test_inline_contents_as_json_text(vertex: DaemonContext, emulator: Emulator) -> None:
    job = await submit(vertex, training_data=json.dumps(CHATS[:2]))
    assert job.state is State.TUNING, job.last_error
    assert staged_lines(emulator, job) == CHATS[:2]


async def test_jsonl_file_of_contents_and_pairs(vertex: DaemonContext, emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    lines = [*CHATS, PAIRS[0]]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    job = await submit(vertex, training_file=str(path))
    assert job.state is State.TUNING, job.last_error
    pair_as_contents = {"contents": [turn("user", "0"), turn("model", "1")]}
    assert staged_lines(emulator, job) == [*CHATS, pair_as_contents]
    await finish(vertex, job)


async def test_gs_training_file_is_used_in_place_and_never_purged(vertex: DaemonContext, emulator: Emulator) -> None:
    uri = f"gs://{USER_BUCKET}/sets/chats.jsonl"
    data = ("\n".join(json.dumps(line) for line in CHATS) + "\n").encode()
    emulator.state.storage.put(USER_BUCKET, "sets/chats.jsonl", data, now=0.0, content_type="application/jsonl")
    job = await submit(vertex, training_file=uri, keep_until=datetime.now(UTC) + timedelta(days=1))
    assert job.state is State.TUNING, job.last_error
    assert job.training_uri == uri
    assert stage_objects(emulator) == 0  # not copied
    done = await finish(vertex, job)
    assert done.tuned_endpoint_name is not None
    async with vertex.store.engine.begin() as conn:
        past = datetime.now(UTC) - timedelta(hours=1)
        await conn.execute(tuning_jobs.update().where(tuning_jobs.c.id == job.id).values(keep_until=past))
    outcomes = await Purger(vertex).run_once()
    assert [(outcome.job_id, outcome.deleted) for outcome in outcomes] == [(job.id, True)]
    assert emulator.stats()["deployments"]["models"] == 0
    # The producer's file is not ours: still there, byte for byte.
    assert emulator.state.storage.get(USER_BUCKET, "sets/chats.jsonl").data == data


async def test_gs_training_file_that_does_not_exist(vertex: DaemonContext, emulator: Emulator) -> None:
    uri = f"gs://{USER_BUCKET}/sets/missing.jsonl"
    job = await submit(vertex, training_file=uri)
    assert job.state is State.INVALID
    assert job.last_error == f"training_file {uri}: no such object in Cloud Storage (or no such bucket)"
    assert creates(emulator) == 0


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("gs://tk-user-data/", "training_file gs://tk-user-data/: must name an object"),
        ("gs://Bad_Bucket!/x.jsonl", "training_file gs://Bad_Bucket!/x.jsonl: not a Cloud Storage object"),
    ],
)
async def test_gs_training_file_not_an_object(
    vertex: DaemonContext, emulator: Emulator, uri: str, message: str
) -> None:
    job = await submit(vertex, training_file=uri)
    assert job.state is State.INVALID
    assert job.last_error is not None and job.last_error.startswith(message), job.last_error
    assert creates(emulator) == 0


# ---- Vertex's own limits, before anything is uploaded ------------------------------------------------------------


async def test_vertex_takes_longer_pairs_than_the_gemini_api(vertex: DaemonContext) -> None:
    # 41,000 characters: over the Gemini API's 40,000, far under Vertex's 131,072 tokens.
    job = await submit(vertex, training_data=[*PAIRS, {"text_input": "x" * 41_000, "output": "y"}])
    assert job.state is State.TUNING, job.last_error


async def test_example_over_the_token_limit(vertex: DaemonContext, emulator: Emulator) -> None:
    big = chat(1, system=SECRET * 30_000)  # 390,000 characters of system instruction, plus the turns
    big["contents"][0]["parts"][0]["text"] = SECRET * 11_000
    job = await submit(vertex, training_data=[CHATS[0], big])
    assert job.state is State.INVALID
    assert job.last_error is not None
    assert job.last_error.startswith("training_data: example 1: about 133,"), job.last_error
    assert "Vertex AI takes at most 131,072 tokens per example" in job.last_error
    assert SECRET not in job.last_error
    assert stage_objects(emulator) == 0 and creates(emulator) == 0


async def test_limit_in_a_file_names_the_line(vertex: DaemonContext, emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(CHATS[0]) + "\n\n" + json.dumps({"text_input": SECRET * 41_000, "output": "y"}) + "\n")
    job = await submit(vertex, training_file=str(path))
    assert job.state is State.INVALID
    assert job.last_error is not None
    assert job.last_error.startswith(f"training_file {path}: line 3: example 1: about 133,"), job.last_error
    assert SECRET not in job.last_error
    assert stage_objects(emulator) == 0 and creates(emulator) == 0


@pytest.mark.parametrize(
    ("example", "message"),
    [
        ({"contents": [turn("user", "q"), turn("user", SECRET)]}, 'contents[1].role must be "model"'),
        ({"contents": [turn("user", SECRET)]}, "the last turn must be the model's"),
        ({"contents": [turn("model", SECRET), turn("user", "q")]}, 'contents[0].role must be "user"'),
        ({"contents": [turn("user", "q"), {"role": "model", "parts": [{"inlineData": SECRET}]}]}, "parts[0]"),
        ({"contents": [turn("user", "q"), turn("model", "  ")]}, "contents[1] is empty"),
        ({"contents": []}, "contents must be a non-empty list"),
        ({"contents": [turn("user", "q"), turn("model", "a")], "note": SECRET}, "unknown key 'note'"),
        ({"contents": [turn("user", "q"), turn("model", "a")], "systemInstruction": SECRET}, "systemInstruction"),
        ({"messages": [{"role": "user", "content": SECRET}]}, "'messages' are not supported"),
    ],
)
async def test_malformed_contents(vertex: DaemonContext, emulator: Emulator, example: Any, message: str) -> None:
    job = await submit(vertex, training_data=[*CHATS[:3], example])
    assert job.state is State.INVALID
    assert job.last_error is not None
    assert job.last_error.startswith("training_data: example 3: "), job.last_error
    assert message in job.last_error
    assert SECRET not in job.last_error
    assert stage_objects(emulator) == 0 and creates(emulator) == 0


# ---- the Gemini API takes single exchanges only -----------------------------------------------------------------


async def test_gemini_refuses_multi_turn(gemini: DaemonContext, emulator: Emulator) -> None:
    job = await submit(gemini, training_data=[chat(0, exchanges=1), chat(1, exchanges=2)])
    assert job.state is State.INVALID
    assert job.last_error is not None
    assert job.last_error.startswith(
        "training_data: example 1: a conversation of 4 turns: the Gemini API tunes on single text_input/output "
        "exchanges only"
    ), job.last_error
    assert 'backend = "vertex"' in job.last_error
    assert emulator.stats()["models"] == {}


async def test_gemini_refuses_a_system_instruction(gemini: DaemonContext) -> None:
    job = await submit(gemini, training_data=[chat(0, exchanges=1, system="Be brief.")])
    assert job.state is State.INVALID
    assert job.last_error is not None
    assert "example 0: a conversation of 2 turns and a system instruction" in job.last_error


async def test_gemini_takes_single_exchanges_in_contents_form(gemini: DaemonContext) -> None:
    job = await submit(gemini, training_data=[chat(n, exchanges=1) for n in range(3)])
    assert job.state is State.TUNING, job.last_error
    await finish(gemini, job)


async def test_gemini_refuses_a_gs_training_file(gemini: DaemonContext) -> None:
    job = await submit(gemini, training_file=f"gs://{USER_BUCKET}/sets/chats.jsonl")
    assert job.state is State.INVALID
    assert job.last_error == (
        f"training_file gs://{USER_BUCKET}/sets/chats.jsonl: the Gemini API takes its examples in the request; "
        'a training file in Cloud Storage needs backend = "vertex"'
    )


async def test_gemini_limits_stay(gemini: DaemonContext) -> None:
    job = await submit(gemini, training_data=[*PAIRS, {"text_input": "x" * 40_001, "output": "y"}])
    assert job.state is State.INVALID
    assert job.last_error == "training_data: example 4: text_input is 40,001 characters; the limit is 40,000"


# ---- vertex.give_up_after ------------------------------------------------------------------------------------


async def running_job(vertex: DaemonContext, emulator: Emulator) -> Job:
    emulator.configure(step_seconds=3600.0)  # an hour a step: the job stays running
    job = await submit(vertex, training_data=PAIRS)
    assert job.state is State.TUNING, job.last_error
    assert job.submitted_at is not None
    return job


async def poll_at(vertex: DaemonContext, job: Job, later: timedelta) -> Job:
    """One poll of the job with the daemon's clock `later` after now."""
    vertex.store.clock = lambda: utcnow() + later
    await one_pass(Poller(vertex))
    polled = await vertex.store.get_job(job.id)
    assert polled is not None and polled.last_polled_at is not None
    return polled


async def remote_state(vertex: DaemonContext, job: Job) -> str:
    client = vertex.backend.client  # type: ignore[attr-defined]
    assert job.operation_name is not None
    return str((await client.get_tuning_job(job.operation_name)).state.value)


async def test_a_job_still_tuning_after_give_up_after_is_cancelled_and_failed(
    vertex: DaemonContext, emulator: Emulator
) -> None:
    assert vertex.settings.give_up_after == timedelta(days=2)
    job = await running_job(vertex, emulator)
    # Long, but not too long: polled, and left alone.
    polled = await poll_at(vertex, job, timedelta(days=1, hours=23))
    assert polled.state is State.TUNING
    assert await remote_state(vertex, job) not in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED")
    # Past the limit: cancelled on the service, failed here, with what happened in last_error.
    failed = await poll_at(vertex, job, timedelta(days=2, minutes=1))
    assert failed.state is State.FAILED
    assert failed.last_error is not None
    assert failed.last_error.startswith("gave up: still not finished 48.0 hours after submission"), failed.last_error
    assert "vertex.give_up_after" in failed.last_error and "cancelled on the service" in failed.last_error

    assert await remote_state(vertex, job) in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED")
    emulator.configure(step_seconds=0.01)  # the emulator cancels within one step's time

    async def cancelled() -> bool:
        return await remote_state(vertex, job) == "JOB_STATE_CANCELLED"

    await wait_until(cancelled, within=10, message="the tuning job to be cancelled on the service")


async def test_the_gemini_backend_never_gives_up(gemini: DaemonContext, emulator: Emulator) -> None:
    assert gemini.settings.give_up_after is None
    emulator.configure(step_seconds=3600.0)
    job = await submit(gemini, training_data=PAIRS)
    assert job.state is State.TUNING, job.last_error
    gemini.store.clock = lambda: utcnow() + timedelta(days=30)
    await one_pass(Poller(gemini))
    polled = await gemini.store.get_job(job.id)
    assert polled is not None and polled.last_polled_at is not None
    assert polled.state is State.TUNING
