"""submit, jobs, show, cancel, retry: the real command in a subprocess, against a migrated SQLite file."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.cli.conftest import Cli
from tests.cli.seeding import PAIRS, SNAPSHOTS, SUBMIT_ERROR, in_store, seed_job
from tunekeeper.config import EX_CONFIG
from tunekeeper.db.records import Job
from tunekeeper.db.store import JobStore
from tunekeeper.states import State

VALID_JSONL = '{"text_input": "1", "output": "2"}\n{"textInput": "3", "output": "4"}\n'
VALID_CSV = "text_input,output\n1,2\n3,4\n5,6\n"

WriteFile = Callable[[str, str], Path]


def get_job(url: str, job_id: int) -> Job:
    job = in_store(url, lambda store: store.get_job(job_id))
    assert job is not None
    return job


def all_jobs(url: str) -> list[Job]:
    return in_store(url, lambda store: store.list_jobs(limit=1000))


def seed(url: str, state: State, name: str = "number generator") -> int:
    return in_store(url, lambda store: seed_job(store, state, name))


# ---- submit -------------------------------------------------------------------------------------------------


def test_submit_jsonl_inserts_the_producer_row(cli: Cli, write_file: WriteFile, sqlite_url: str) -> None:
    data = write_file("train.jsonl", VALID_JSONL)
    pairs = write_file("eval.jsonl", '{"text_input": "5", "output": "6"}\n')

    result = cli(
        "submit", "train.jsonl", "--display-name", "number generator",
        "--base-model", "models/gemini-1.5-flash-001-tuning", "--epochs", "3", "--batch-size", "2",
        "--learning-rate-multiplier", "1.5", "--tuned-model-id", "numbers-v1", "--priority", "5",
        "--label", "team=search", "--label", "run=a=b", "--keep-until", "2030-01-02T03:04:05",
        "--eval", pairs.name,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout.strip())
    job = get_job(sqlite_url, job_id)
    assert job.state == State.QUEUED
    assert job.display_name == "number generator"
    # What was checked is what is tuned: the examples are in the row, the file is not needed any more.
    assert job.training_file is None
    assert job.training_data == [{"text_input": "1", "output": "2"}, {"text_input": "3", "output": "4"}]
    data.unlink()
    assert job.base_model == "models/gemini-1.5-flash-001-tuning"
    assert (job.epoch_count, job.batch_size) == (3, 2)
    assert (job.learning_rate, job.learning_rate_multiplier) == (None, 1.5)
    assert job.tuned_model_id == "numbers-v1"
    assert job.priority == 5
    assert job.labels == {"team": "search", "run": "a=b"}
    assert job.keep_until == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert job.eval_data == [{"text_input": "5", "output": "6"}]


def test_submit_csv_with_json_output(cli: Cli, write_file: WriteFile, sqlite_url: str) -> None:
    data = write_file("train.csv", VALID_CSV)

    result = cli("submit", data, "--display-name", "csv job", "--json")

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == {
        "id": printed["id"],
        "state": "queued",
        "display_name": "csv job",
        "file": str(data),
        "examples": 3,
        "eval_pairs": 0,
    }
    job = get_job(sqlite_url, printed["id"])
    assert (job.training_file, job.eval_data, job.labels, job.priority) == (None, None, None, 0)
    assert job.training_data == [{"text_input": str(n), "output": str(n + 1)} for n in (1, 3, 5)]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("broken.jsonl", VALID_JSONL + '{"text_input": "5"}\n', "line 3: example 2: missing output"),
        ("broken.csv", "text_input,output\n1,2\n3,\n", "line 3: example 1: output is empty"),
        ("empty.jsonl", "\n", "no examples"),
        ("train.txt", "1,2\n", "unsupported file type '.txt'"),
    ],
)
def test_submit_refuses_a_broken_file(
    cli: Cli, write_file: WriteFile, sqlite_url: str, name: str, text: str, expected: str
) -> None:
    path = write_file(name, text)

    result = cli("submit", path, "--display-name", "broken")

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert str(path) in result.stderr
    assert all_jobs(sqlite_url) == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--epochs", "0"], "epoch_count must be a whole number from 1 to 1000, got number 0"),
        (["--learning-rate", "nan"], "learning_rate must be a number greater than 0"),
        (["--tuned-model-id", "Not_Valid"], "tuned_model_id 'Not_Valid' is not a valid id"),
        (["--label", "team=a", "--label", "team=b"], "--label team is given twice"),
    ],
)
def test_submit_refuses_a_bad_request(
    cli: Cli, write_file: WriteFile, sqlite_url: str, options: list[str], expected: str
) -> None:
    write_file("train.jsonl", VALID_JSONL)

    result = cli("submit", "train.jsonl", "--display-name", "x", *options)

    assert result.returncode == 2
    assert result.stderr.strip() == expected or expected in result.stderr
    assert result.stderr.count("\n") == 1
    assert all_jobs(sqlite_url) == []


def test_submit_refuses_a_broken_eval_file_naming_it(cli: Cli, write_file: WriteFile, sqlite_url: str) -> None:
    write_file("train.jsonl", VALID_JSONL)
    pairs = write_file("eval.jsonl", '{"text_input": "5", "expected": "6"}\n')

    result = cli("submit", "train.jsonl", "--display-name", "x", "--eval", pairs)

    assert result.returncode == 2
    assert result.stderr.startswith(f"--eval {pairs}: line 1: example 0: unknown key 'expected'")
    assert all_jobs(sqlite_url) == []


CHAT_WITH_SYSTEM = json.dumps(
    {
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [{"role": "user", "parts": [{"text": "q"}]}, {"role": "model", "parts": [{"text": "a"}]}],
    }
)
VERTEX = {"TUNEKEEPER_BACKEND": "vertex"}


@pytest.mark.parametrize(
    ("env", "text", "options", "expected"),
    [
        ({}, CHAT_WITH_SYSTEM + "\n", [], "train.jsonl: line 1: example 0:"),
        ({}, json.dumps({"text_input": "x" * 40_001, "output": "y"}) + "\n", [], "the limit is 40,000"),
        (VERTEX, VALID_JSONL, ["--batch-size", "2"], "batch_size and learning_rate are not settings of Vertex AI"),
        ({"TUNEKEEPER_DATA__MAX_SUBMIT_BYTES": "1024"}, VALID_JSONL * 40, [], "(data.max_submit_bytes)"),
    ],
    ids=["gemini-system-instruction", "gemini-input-limit", "vertex-batch-size", "size-cap"],
)
def test_submit_applies_the_daemons_rules_for_the_configured_service(
    cli: Cli, write_file: WriteFile, sqlite_url: str, env: dict[str, str], text: str, options: list[str], expected: str
) -> None:
    write_file("train.jsonl", text)

    result = cli("submit", "train.jsonl", "--display-name", "x", *options, env=env)

    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert all_jobs(sqlite_url) == []


def test_submit_takes_what_the_configured_service_takes(cli: Cli, write_file: WriteFile, sqlite_url: str) -> None:
    """Vertex AI: conversations with a system instruction, and display names longer than the Gemini API's 40."""
    write_file("train.jsonl", CHAT_WITH_SYSTEM + "\n")

    result = cli("submit", "train.jsonl", "--display-name", "n" * 128, env=VERTEX)

    assert result.returncode == 0, result.stderr
    job = get_job(sqlite_url, int(result.stdout))
    assert job.training_data == [json.loads(CHAT_WITH_SYSTEM)]


def test_submit_refuses_a_model_id_already_in_use(cli: Cli, write_file: WriteFile, sqlite_url: str) -> None:
    write_file("train.jsonl", VALID_JSONL)
    assert cli("submit", "train.jsonl", "--display-name", "x", "--tuned-model-id", "taken").returncode == 0

    result = cli("submit", "train.jsonl", "--display-name", "y", "--tuned-model-id", "taken")

    assert result.returncode == 2
    assert "tuned_model_id 'taken' is already used by another job" in result.stderr
    assert len(all_jobs(sqlite_url)) == 1


def test_submit_usage_errors_come_from_argparse(cli: Cli, write_file: WriteFile) -> None:
    write_file("train.jsonl", VALID_JSONL)

    both_rates = cli(
        "submit", "train.jsonl", "--display-name", "x", "--learning-rate", "0.1", "--learning-rate-multiplier", "2"
    )
    bad_time = cli("submit", "train.jsonl", "--display-name", "x", "--keep-until", "next week")

    assert both_rates.returncode == 2
    assert "not allowed with argument" in both_rates.stderr
    assert bad_time.returncode == 2
    assert "not an ISO 8601 time: 'next week'" in bad_time.stderr


# ---- jobs ---------------------------------------------------------------------------------------------------


def test_jobs_table_and_json(cli: Cli, sqlite_url: str) -> None:
    tuning = seed(sqlite_url, State.TUNING, "tuning one")
    failed = seed(sqlite_url, State.FAILED, "a rather long display name that goes on and on and on for ever")
    queued = seed(sqlite_url, State.QUEUED, "waiting")

    table = cli("jobs")

    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "STATE", "PROGRESS", "MODEL", "AGE"]
    assert [row.split()[0] for row in rows] == [str(queued), str(failed), str(tuning)]
    by_id = {int(row.split()[0]): row for row in rows}
    assert "62%" in by_id[tuning]
    assert f"tunedModels/tuning-one-{tuning}" in by_id[tuning]
    assert "%" not in by_id[failed]
    assert "a rather long display name" in by_id[failed]
    assert "…" in by_id[failed]
    assert "for ever" not in by_id[failed]
    # columns line up under the header
    state_column = header.index("STATE")
    assert [row[state_column:].split()[0] for row in rows] == ["queued", "failed", "tuning"]

    listed = cli("jobs", "--json", "--state", "tuning", "queued")

    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert [job["id"] for job in found] == [queued, tuning]
    assert found[1]["state"] == "tuning"
    assert found[1]["progress_percent"] == 62.0
    assert datetime.fromisoformat(found[1]["created_at"]).tzinfo is not None


def test_jobs_limit_and_empty(cli: Cli, sqlite_url: str) -> None:
    assert cli("jobs").stdout.strip() == "no jobs"
    for _ in range(3):
        seed(sqlite_url, State.QUEUED)

    assert len(json.loads(cli("jobs", "--json", "--limit", "2").stdout)) == 2
    assert cli("jobs", "--limit", "0").returncode == 2
    assert cli("jobs", "--state", "sleeping").returncode == 2


# ---- show ---------------------------------------------------------------------------------------------------


def test_show_prints_the_job_its_timeline_and_loss_curve(cli: Cli, sqlite_url: str) -> None:
    job_id = seed(sqlite_url, State.SUCCEEDED)

    result = cli("show", str(job_id))

    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(f"job {job_id}: number generator\n")
    assert re.search(r"^  state +succeeded$", text, re.MULTILINE)
    assert f"tunedModels/number-generator-{job_id}/operations/op-{job_id}" in text
    assert "inline, 2 examples" in text
    loss_line = next(line for line in text.splitlines() if line.strip().startswith("loss "))
    assert "2.5 █▄▂▁ 0.125" in loss_line
    assert "steps 10-40, 4 snapshots" in loss_line
    timeline = text.split("timeline (UTC)\n", 1)[1].splitlines()
    kinds = [line.split()[2] for line in timeline[1:]]
    assert kinds == ["claimed", "accepted", "progress", "succeeded"]
    assert "queued -> submitting" in timeline[1]
    assert "attempt=1" in timeline[1]
    assert "tuning -> succeeded" in timeline[4]


def test_show_json(cli: Cli, sqlite_url: str) -> None:
    job_id = seed(sqlite_url, State.TUNING)

    result = cli("show", str(job_id), "--json")

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["id"] == job_id
    assert shown["state"] == "tuning"
    assert shown["training_data"] == PAIRS
    assert shown["snapshots"] == SNAPSHOTS
    assert datetime.fromisoformat(shown["submitted_at"]).tzinfo is not None
    assert [event["kind"] for event in shown["events"]] == ["claimed", "accepted", "progress"]
    assert shown["events"][0]["from_state"] == "queued"
    assert shown["events"][0]["to_state"] == "submitting"
    assert datetime.fromisoformat(shown["events"][0]["at"]).tzinfo is not None


def test_show_shows_the_error_of_a_failed_job(cli: Cli, sqlite_url: str) -> None:
    job_id = seed(sqlite_url, State.FAILED)

    result = cli("show", str(job_id))

    assert re.search(rf"^  last error +{re.escape(SUBMIT_ERROR)}$", result.stdout, re.MULTILINE)
    assert "submit_failed" in result.stdout


def test_show_of_a_missing_job(cli: Cli) -> None:
    result = cli("show", "404")

    assert (result.returncode, result.stdout, result.stderr) == (1, "", "no job 404\n")


# ---- cancel -------------------------------------------------------------------------------------------------


def test_cancel_requests_then_reports_the_request(cli: Cli, sqlite_url: str) -> None:
    job_id = seed(sqlite_url, State.TUNING)

    first = cli("cancel", str(job_id))
    second = cli("cancel", str(job_id))

    assert first.returncode == 0, first.stderr
    assert first.stdout == f"cancel requested for job {job_id} (tuning); the daemon will cancel it\n"
    assert get_job(sqlite_url, job_id).cancel_requested is True
    assert second.returncode == 0
    assert second.stdout == f"cancel already requested for job {job_id} (tuning)\n"
    assert "tuning (cancel requested)" in cli("jobs").stdout


def test_cancel_of_a_finished_job_is_refused(cli: Cli, sqlite_url: str) -> None:
    job_id = seed(sqlite_url, State.SUCCEEDED)

    result = cli("cancel", str(job_id))

    assert result.returncode == 1
    assert result.stderr == f"job {job_id} is succeeded; finished jobs cannot be cancelled\n"
    assert get_job(sqlite_url, job_id).cancel_requested is False


def test_cancel_of_a_job_being_cancelled(cli: Cli, sqlite_url: str) -> None:
    job_id = seed(sqlite_url, State.CANCELLING)

    result = cli("cancel", str(job_id))

    assert (result.returncode, result.stdout) == (0, f"job {job_id} is already being cancelled\n")


def test_cancel_of_a_missing_job(cli: Cli) -> None:
    result = cli("cancel", "404")

    assert (result.returncode, result.stderr) == (1, "no job 404\n")


# ---- retry --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [State.FAILED, State.INVALID, State.CANCELLED])
def test_retry_queues_a_copy(cli: Cli, sqlite_url: str, state: State) -> None:
    job_id = seed(sqlite_url, state)

    result = cli("retry", str(job_id))

    assert result.returncode == 0, result.stderr
    new_id = int(result.stdout.strip())
    assert new_id != job_id
    old, new = get_job(sqlite_url, job_id), get_job(sqlite_url, new_id)
    assert new.state == State.QUEUED
    assert (new.display_name, new.training_data, new.attempts) == (old.display_name, old.training_data, 0)
    assert new.tuned_model_id is None  # a fresh model id is derived when it is claimed
    events = in_store(sqlite_url, lambda store: store.events(job_id))
    assert events[-1].kind == "retried_as"
    assert events[-1].detail == {"new_job_id": new_id}


@pytest.mark.parametrize("state", [State.TUNING, State.SUCCEEDED, State.QUEUED])
def test_retry_refuses_other_states(cli: Cli, sqlite_url: str, state: State) -> None:
    job_id = seed(sqlite_url, state)

    result = cli("retry", str(job_id))

    assert result.returncode == 1
    assert result.stderr == f"job {job_id} is {state}; only failed, invalid or cancelled jobs can be retried\n"
    assert len(all_jobs(sqlite_url)) == 1


def test_retry_of_a_missing_job(cli: Cli) -> None:
    result = cli("retry", "404")

    assert (result.returncode, result.stderr) == (1, "no job 404\n")


# ---- configuration and database problems --------------------------------------------------------------------


def test_bad_configuration_value_exits_78_with_one_line(cli: Cli) -> None:
    result = cli("jobs", env={"TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS": "0"})

    assert result.returncode == EX_CONFIG
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "gemini.max_active_jobs" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_78(cli: Cli, tmp_path: Path) -> None:
    result = cli("--config", tmp_path / "nowhere.toml", "jobs")

    assert result.returncode == EX_CONFIG
    assert result.stderr == f"config: {tmp_path / 'nowhere.toml'}: no such file\n"


def test_config_file_names_the_database(write_file: WriteFile, sqlite_url: str, tmp_path: Path) -> None:
    seed(sqlite_url, State.QUEUED, "from the file")
    config = write_file("tunekeeper.toml", f'[database]\nurl = "{sqlite_url}"\n')
    no_url = Cli(None, tmp_path)

    by_option = no_url("--config", config, "jobs")
    by_variable = no_url("jobs", env={"TUNEKEEPER_CONFIG": str(config)})

    assert "from the file" in by_option.stdout, by_option.stderr
    assert "from the file" in by_variable.stdout, by_variable.stderr


def test_unmigrated_database_says_what_to_run(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # a file, but no schema
    result = Cli(f"sqlite+aiosqlite:///{empty}", tmp_path)("jobs")

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "run `tunekeeper db upgrade`" in result.stderr


@pytest.mark.parametrize("command", [["jobs"], ["show", "1"], ["cancel", "1"], ["retry", "1"]])
def test_a_missing_database_file_is_named_and_not_created(tmp_path: Path, command: list[str]) -> None:
    result = Cli(None, tmp_path)(*command)  # the default database.url: ./tunekeeper.db

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "tunekeeper.db" in result.stderr and "tunekeeper db upgrade" in result.stderr
    assert not (tmp_path / "tunekeeper.db").exists()


def test_store_sees_what_the_cli_wrote(cli: Cli, write_file: WriteFile, sqlite_url: str) -> None:
    """The row `submit` writes is the one the daemon claims: its model id is derived from name and id."""
    write_file("train.jsonl", VALID_JSONL)
    job_id = int(cli("submit", "train.jsonl", "--display-name", "Number Generator").stdout)

    async def claim(store: JobStore) -> list[Job]:
        return await store.claim_for_submission("tests", limit=1, max_active=1, lease_seconds=60)

    [claimed] = in_store(sqlite_url, claim)

    assert claimed.id == job_id
    assert claimed.tuned_model_id == f"number-generator-{job_id}"


def test_submit_a_cloud_storage_file_stores_its_uri_on_vertex_only(cli: Cli, sqlite_url: str) -> None:
    uri = "gs://tk-user-data/sets/train.jsonl"

    on_vertex = cli("submit", uri, "--display-name", "in place", env=VERTEX)
    on_gemini = cli("submit", uri, "--display-name", "in place")

    assert on_vertex.returncode == 0, on_vertex.stderr
    job = get_job(sqlite_url, int(on_vertex.stdout))
    assert (job.training_file, job.training_data) == (uri, None)  # used in place by the service, never read here
    assert on_gemini.returncode == 2
    assert f"training_file {uri}: the Gemini API takes its examples in the request" in on_gemini.stderr
    assert len(all_jobs(sqlite_url)) == 1


# ---- rows a producer wrote by hand --------------------------------------------------------------------------


def test_a_row_that_is_not_utf8_is_listed_shown_and_not_copied(cli: Cli, sqlite_url: str) -> None:
    import sqlite3

    from sqlalchemy.engine import make_url

    path = make_url(sqlite_url).database
    assert path is not None
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO tuning_jobs (display_name, eval_data) VALUES (CAST(x'6a6f62ff1b5b326ac29b' AS TEXT), ?)",
            ("[" * 1500 + "]" * 1500,),
        )
        db.execute("UPDATE tuning_jobs SET state = 'invalid'")  # as the daemon makes such a row

    listed = cli("jobs")
    shown = cli("show", "1")
    as_json = cli("show", "1", "--json")
    listed_json = cli("jobs", "--json")
    retried = cli("retry", "1")

    for done in (listed, shown, as_json, listed_json):
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        assert not any(char in done.stdout for char in "\x1b\x9b\udcff"), done.stdout
    assert "job\\udcff\\x1b[2j\\x9b" in listed.stdout
    assert "job 1: job\\udcff\\x1b[2j\\x9b" in shown.stdout
    assert "  unreadable  column display_name" in shown.stdout
    assert json.loads(as_json.stdout)["display_name"] == "job\udcff\x1b[2j\x9b"
    assert json.loads(as_json.stdout)["unreadable"] == "display_name"
    assert json.loads(as_json.stdout)["eval_data"] is None  # too deep to read: not shown
    assert retried.returncode == 1
    assert (
        retried.stderr.strip() == "job 1 cannot be retried: its column display_name cannot be read; fix the row first"
    )
