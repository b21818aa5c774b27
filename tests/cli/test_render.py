"""The CLI's text rendering, without a database."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tunekeeper.cli import render
from tunekeeper.db.records import Job, JobEvent
from tunekeeper.states import State

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)


def make_job(**changes: Any) -> Job:
    fields: dict[str, Any] = {field.name: None for field in dataclasses.fields(Job)}
    fields.update(
        id=7,
        state=State.QUEUED,
        display_name="number generator",
        priority=0,
        cancel_requested=False,
        attempts=0,
        created_at=NOW - timedelta(minutes=5),
    )
    fields.update(changes)
    return Job(**fields)


def make_event(kind: str, from_state: State | None, to_state: State | None, **detail: Any) -> JobEvent:
    return JobEvent(id=1, job_id=7, at=NOW, kind=kind, from_state=from_state, to_state=to_state, detail=detail)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5, "0s"),
        (0, "0s"),
        (12.9, "12s"),
        (59, "59s"),
        (60, "1m"),
        (5 * 60 + 59, "5m"),
        (3599, "59m"),
        (3600, "1h"),
        (3 * 3600 + 1, "3h"),
        (86_399, "23h"),
        (86_400, "1d"),
        (2 * 86_400 + 7, "2d"),
        (400 * 86_400, "400d"),
    ],
)
def test_humanize_seconds(seconds: float, expected: str) -> None:
    assert render.humanize_seconds(seconds) == expected


def test_age_counts_from_the_given_moment() -> None:
    assert render.age(NOW - timedelta(hours=3, minutes=59), NOW) == "3h"


@pytest.mark.parametrize(
    ("percent", "bar", "text"),
    [
        (0.0, "░░░░░░░░░░", "0%"),
        (9.99, "░░░░░░░░░░", "9%"),
        (62.4, "██████░░░░", "62%"),
        (99.7, "█████████░", "99%"),  # never 100% while it is still running
        (100.0, "██████████", "100%"),
        (130.0, "██████████", "100%"),
        (-3.0, "░░░░░░░░░░", "0%"),
        (float("nan"), "░░░░░░░░░░", "0%"),
    ],
)
def test_progress_bar_and_percent(percent: float, bar: str, text: str) -> None:
    assert render.progress_bar(percent) == bar
    assert render.percent_text(percent) == text


def test_progress_cell_only_for_tuning_jobs() -> None:
    assert render.progress_cell(make_job(state=State.TUNING, progress_percent=62.0)) == "██████░░░░  62%"
    assert render.progress_cell(make_job(state=State.TUNING, progress_percent=None)) == ""
    assert render.progress_cell(make_job(state=State.SUCCEEDED, progress_percent=100.0)) == ""
    assert render.progress_cell(make_job(state=State.QUEUED)) == ""


def test_sparkline_scales_from_lowest_to_highest() -> None:
    line = render.sparkline([3.0, 2.0, 1.0, 0.0])
    assert line[0] == "█"
    assert line[-1] == "▁"
    assert len(line) == 4
    assert list(line) == sorted(line, reverse=True)


def test_sparkline_edge_cases() -> None:
    assert render.sparkline([]) == ""
    assert render.sparkline([0.5]) == "▄"
    assert render.sparkline([1.0, 1.0, 1.0]) == "▄▄▄"


def test_sparkline_averages_long_series_into_its_width() -> None:
    values = [float(i) for i in range(1000)]
    line = render.sparkline(values, width=20)
    assert len(line) == 20
    assert (line[0], line[-1]) == ("▁", "█")


def test_loss_points_accept_both_spellings_and_skip_junk() -> None:
    snapshots = [
        {"step": 1, "epoch": 1, "meanLoss": 2.0},
        {"step": 2, "epoch": 1, "mean_loss": 1.0},
        {"step": 3, "meanLoss": "0.5"},  # text, not a number
        {"step": 4, "meanLoss": float("nan")},
        {"epoch": 2, "meanLoss": 0.25},  # no step
        {"step": True, "meanLoss": 0.2},  # a boolean is not a step
        "not a snapshot",
    ]
    assert render.loss_points(snapshots) == [(1, 2.0), (2, 1.0), (None, 0.25), (None, 0.2)]


@pytest.mark.parametrize("snapshots", [None, [], {"meanLoss": 1.0}, "not json", 3])
def test_no_loss_curve_without_losses(snapshots: object) -> None:
    assert render.loss_points(snapshots) == []
    assert render.loss_curve(snapshots) is None


def test_loss_curve_from_json_text() -> None:
    text = json.dumps([{"step": 5, "meanLoss": 1.5}, {"step": 10, "meanLoss": 0.75}])
    assert render.loss_curve(text) == "1.5 █▁ 0.75  (steps 5-10, 2 snapshots)"


def test_loss_curve_of_one_snapshot() -> None:
    assert render.loss_curve([{"step": 3, "mean_loss": 0.123456}]) == "0.1235 ▄ 0.1235  (step 3, 1 snapshot)"


def test_clean_escapes_control_characters() -> None:
    assert render.clean("plain text") == "plain text"
    assert render.clean("two\nlines\x1b[31m red") == "two\\nlines\\x1b[31m red"
    assert render.clean(42) == "42"


def test_truncate_counts_terminal_columns() -> None:
    assert render.truncate("short", 10) == "short"
    assert render.truncate("exactly10!", 10) == "exactly10!"
    assert render.truncate("a longer name", 8) == "a longe…"
    assert render.truncate("日本語の名前", 7) == "日本語…"
    assert render.display_width(render.truncate("日本語の名前", 7)) <= 7
    assert render.truncate("anything", 0) == ""


def test_table_sizes_columns_to_content() -> None:
    lines = render.table(("ID", "NAME"), [["1", "a"], ["100", "日本"]], right_aligned=(0,))
    assert lines == [" ID  NAME", "  1  a", "100  日本"]


def test_jobs_table() -> None:
    jobs = [
        make_job(
            id=12,
            state=State.TUNING,
            display_name="number generator",
            progress_percent=62.5,
            tuned_model_name="tunedModels/number-generator-12",
            created_at=NOW - timedelta(hours=3),
        ),
        make_job(id=9, display_name="n" * 80, created_at=NOW - timedelta(seconds=12), cancel_requested=True),
        make_job(id=3, state=State.SUCCEEDED, display_name="bell\x07", created_at=NOW - timedelta(days=2)),
    ]

    lines = render.jobs_table(jobs, NOW).splitlines()

    assert lines[0].split() == ["ID", "NAME", "STATE", "PROGRESS", "MODEL", "AGE"]
    assert lines[1].split() == [
        "12",
        "number",
        "generator",
        "tuning",
        "██████░░░░",
        "62%",
        "tunedModels/number-generator-12",
        "3h",
    ]
    assert lines[2].split() == ["9", "n" * (render.MAX_NAME_WIDTH - 1) + "…", "queued", "(cancel", "requested)", "12s"]
    assert lines[3].split() == ["3", "bell\\x07", "succeeded", "2d"]
    # the AGE column is right-aligned: every line ends at the same column
    assert len({len(line) for line in lines}) == 1


def test_jobs_table_shrinks_names_to_the_terminal() -> None:
    job = make_job(display_name="a fairly long display name for a job")
    wide = render.jobs_table([job], NOW, width=200).splitlines()
    narrow = render.jobs_table([job], NOW, width=40).splitlines()

    assert "a fairly long display name for a job" in wide[1]
    assert len(narrow[1]) < len(wide[1])
    assert "…" in narrow[1]
    assert render.jobs_table([], NOW) == "no jobs"


def test_timeline_lines() -> None:
    events = [
        make_event("claimed", State.QUEUED, State.SUBMITTING, attempt=1, owner="host:1"),
        make_event("progress", None, None, percent=62.0, note="line\nbreak"),
        make_event("retried_as", None, None, new_job_id=8),
    ]

    header, *lines = render.timeline(events)

    assert header.split() == ["TIME", "EVENT", "STATE", "DETAIL"]
    assert lines[0].split() == [
        "2024-06-01",
        "12:00:00",
        "claimed",
        "queued",
        "->",
        "submitting",
        "attempt=1",
        "owner=host:1",
    ]
    assert lines[1].split() == ["2024-06-01", "12:00:00", "progress", "percent=62.0", "note=line\\nbreak"]
    assert lines[2].endswith("new_job_id=8")
    assert render.timeline([]) == ["  (no events)"]


def test_event_detail_of_any_json() -> None:
    assert render.event_detail({"error": "boom", "retry_at": "2024-06-01T12:00:00+00:00", "n": None}) == (
        "error=boom retry_at=2024-06-01T12:00:00+00:00 n=null"
    )
    assert render.event_detail(["a", 1]) == '["a",1]'


def test_eval_lines() -> None:
    results = [
        {"input": "1", "expected": "2", "output": "2", "match": True},
        {"input": "3", "expected": "4", "output": None, "match": False, "error": "UNAVAILABLE"},
        "odd",
    ]

    lines = render.eval_lines(results)

    assert lines[0].split() == ["0", "match", "input=1", "expected=2", "output=2"]
    assert lines[1].split() == ["1", "miss", "input=3", "expected=4", "output=null", "error=UNAVAILABLE"]
    assert lines[2].split() == ["2", '"odd"']
    assert render.eval_lines(None) == []


def test_job_details_page() -> None:
    job = make_job(
        state=State.SUCCEEDED,
        base_model="models/gemini-1.5-flash-001-tuning",
        training_file="/data/numbers.jsonl",
        epoch_count=5,
        learning_rate=0.001,
        labels={"team": "search"},
        keep_until=NOW + timedelta(days=30),
        eval_data=[{"text_input": "1", "output": "2"}],
        attempts=1,
        tuned_model_id="number-generator-7",
        tuned_model_name="tunedModels/number-generator-7",
        operation_name="tunedModels/number-generator-7/operations/abc",
        progress_percent=100.0,
        completed_steps=40,
        total_steps=40,
        mean_loss=0.125,
        snapshots=[{"step": 20, "meanLoss": 1.0}, {"step": 40, "meanLoss": 0.125}],
        eval_score=0.5,
        eval_results=[{"input": "1", "expected": "2", "output": "2", "match": True}],
        finished_at=NOW - timedelta(minutes=1),
    )
    events = [make_event("succeeded", State.TUNING, State.SUCCEEDED)]

    page = render.job_details(job, events, NOW)

    lines = page.splitlines()
    assert lines[0] == "job 7: number generator"
    fields = {line.split()[0]: " ".join(line.split()[1:]) for line in lines[1:] if line.startswith("  ")}
    assert fields["state"] == "succeeded"
    assert fields["progress"] == "██████████ 100% step 40/40 loss 0.125"
    assert fields["training"] == "file /data/numbers.jsonl"
    assert fields["request"] == ("base model models/gemini-1.5-flash-001-tuning, epochs 5, learning rate 0.001")
    assert fields["labels"] == "team=search"
    assert fields["keep"] == "until 2024-07-01 12:00:00 UTC"
    assert fields["finished"] == "2024-06-01 11:59:00 UTC (1m ago)"
    assert fields["loss"] == "1 █▁ 0.125 (steps 20-40, 2 snapshots)"
    assert "eval score  0.5" in page
    assert page.index("eval outputs") < page.index("timeline (UTC)")
    assert "tuning -> succeeded" in lines[-1]


def test_job_details_of_a_hand_written_row() -> None:
    """A producer's INSERT may put any JSON in the request columns; the page still renders."""
    job = make_job(display_name="x\x1b]0;title\x07", training_data="not a list", labels=["a"], epoch_count="five")

    page = render.job_details(job, [], NOW)

    assert "\x1b" not in page
    fields = {line.split()[0]: " ".join(line.split()[1:]) for line in page.splitlines() if line.startswith("  ")}
    assert fields["training"] == "inline"
    assert fields["labels"] == '["a"]'
    assert fields["request"] == "base model (default), epochs five"


def test_json_forms() -> None:
    job = make_job(state=State.TUNING, submitted_at=NOW, labels={"a": "b"})
    event = make_event("claimed", State.QUEUED, State.SUBMITTING, attempt=1)

    as_json = json.loads(render.dumps(render.job_json(job) | {"events": [render.event_json(event)]}))

    assert as_json["state"] == "tuning"
    assert as_json["created_at"] == "2024-06-01T11:55:00+00:00"
    assert as_json["submitted_at"] == "2024-06-01T12:00:00+00:00"
    assert as_json["labels"] == {"a": "b"}
    assert as_json["events"] == [
        {
            "id": 1,
            "job_id": 7,
            "at": "2024-06-01T12:00:00+00:00",
            "kind": "claimed",
            "from_state": "queued",
            "to_state": "submitting",
            "detail": {"attempt": 1},
        }
    ]
    summary = render.job_summary_json(job)
    assert list(summary) == list(render.SUMMARY_FIELDS)
    assert "training_data" not in summary


# ---- Vertex AI rows -----------------------------------------------------------------------------------------

VERTEX = "projects/p-1/locations/us-central1"


def vertex_job(**changes: Any) -> Job:
    """A row as the daemon writes it for Vertex AI: the tuning job as its handle, the staged training file."""
    values: dict[str, Any] = {
        "state": State.TUNING,
        "backend": "vertex",
        "operation_name": f"{VERTEX}/tuningJobs/111",
        "training_uri": "gs://stage/tk/dep/7/train.jsonl",
        "training_data": [{"text_input": "1", "output": "2"}],
        "progress_percent": 20.0,
        "sub_state": "WAITING_FOR_QUOTA",
        "tuned_model_id": "number-generator-7",  # fixed by the claim on every backend
    }
    return make_job(**(values | changes))


def test_the_sub_state_is_shown_in_words_while_tuning() -> None:
    assert render.sub_state_text(vertex_job()) == "waiting for quota"
    assert render.state_text(vertex_job()) == "tuning (waiting for quota)"
    assert render.state_text(vertex_job(cancel_requested=True)) == "tuning (waiting for quota, cancel requested)"
    # the column keeps the last sub-state seen; once the job has left tuning it says nothing
    assert render.state_text(vertex_job(state=State.FAILED)) == "failed"
    assert render.state_text(vertex_job(sub_state=None)) == "tuning"
    assert render.state_text(vertex_job(sub_state="")) == "tuning"


def test_a_gemini_row_renders_as_before_the_backend_column() -> None:
    before = make_job(state=State.SUCCEEDED, operation_name="tunedModels/m-7/operations/x")
    gemini = dataclasses.replace(before, backend="gemini")

    assert render.jobs_table([gemini], NOW) == render.jobs_table([before], NOW)
    assert render.job_details(gemini, [], NOW) == render.job_details(before, [], NOW)
    assert render.jobs_table([gemini], NOW).splitlines()[0].split() == [
        "ID", "NAME", "STATE", "PROGRESS", "MODEL", "AGE"
    ]  # fmt: skip
    assert "  operation  tunedModels/m-7/operations/x" in render.job_details(gemini, [], NOW)


def test_jobs_table_names_the_backend_when_a_job_ran_on_vertex() -> None:
    jobs = [
        vertex_job(id=9, created_at=NOW - timedelta(minutes=2)),
        make_job(id=8, state=State.SUCCEEDED, backend="gemini", tuned_model_name="tunedModels/m-8"),
        make_job(id=3),  # queued: nothing sent yet, so no backend in the row
    ]

    header, *rows = render.jobs_table(jobs, NOW).splitlines()

    assert header.split() == ["ID", "NAME", "BACKEND", "STATE", "PROGRESS", "MODEL", "AGE"]
    assert rows[0].split() == [
        "9", "number", "generator", "vertex", "tuning", "(waiting", "for", "quota)", "██░░░░░░░░", "20%", "2m"
    ]  # fmt: skip
    assert rows[1].split() == ["8", "number", "generator", "gemini", "succeeded", "tunedModels/m-8", "5m"]
    assert rows[2].split() == ["3", "number", "generator", "queued", "5m"]
    state_column = header.index("STATE")
    assert [row[state_column:].split()[0] for row in rows] == ["tuning", "succeeded", "queued"]
    assert len({len(line) for line in [header, *rows]}) == 1  # AGE stays right-aligned
    narrow = render.jobs_table([dataclasses.replace(jobs[0], display_name="n" * 40)], NOW, width=90)
    assert "…" in narrow.splitlines()[1]


def test_job_details_of_a_vertex_job() -> None:
    job = vertex_job(
        state=State.SUCCEEDED,
        sub_state="POST_PROCESSING",  # left from the last poll: not shown once the job succeeded
        tuned_model_name=f"{VERTEX}/models/222@1",
        tuned_endpoint_name=f"{VERTEX}/endpoints/333",
        progress_percent=100.0,
        completed_steps=10,
        total_steps=10,
    )

    page = render.job_details(job, [], NOW)

    fields = {line[:14].strip(): line[14:].strip() for line in page.splitlines() if line.startswith("  ")}
    assert fields["state"] == "succeeded"
    assert fields["backend"] == "vertex"
    assert fields["tuning job"] == f"{VERTEX}/tuningJobs/111"
    assert fields["model"] == f"{VERTEX}/models/222@1"
    assert fields["endpoint"] == f"{VERTEX}/endpoints/333"
    assert fields["staged file"] == "gs://stage/tk/dep/7/train.jsonl"
    assert fields["training"] == "inline, 1 example"
    assert "operation" not in fields
    assert "model id" not in fields  # the service chose the ids: a claimed Gemini-style id would mislead
    assert "post processing" not in page
    assert list(fields).index("training") + 1 == list(fields).index("staged file")


def test_job_details_of_a_vertex_job_still_waiting() -> None:
    page = render.job_details(vertex_job(), [], NOW)

    assert "  state        tuning (waiting for quota)" in page.splitlines()
    assert "  model " not in page
    assert "  endpoint " not in page


def test_vertex_values_written_by_hand_cannot_reach_the_terminal() -> None:
    job = vertex_job(
        backend="vertex\x1b[2J",
        sub_state="TUNING\x1b]0;owned\x07",
        operation_name="op\x1b[31m",
        training_uri="gs://b/\r\ntrain.jsonl",
        tuned_model_name="m\x9b1m",
        tuned_endpoint_name="e\x1b[0m",
    )

    texts = [render.jobs_table([job], NOW), render.job_details(job, [], NOW), render.state_text(job)]

    for text in texts:
        assert not any(char in text for char in "\x1b\x07\x9b\r"), text
    page = texts[1]
    assert "vertex\\x1b[2J" in page
    assert "tuning (tuning\\x1b]0;owned\\x07)" in page
    assert "gs://b/\\r\\ntrain.jsonl" in page


def test_json_summary_carries_the_vertex_names() -> None:
    job = vertex_job(tuned_endpoint_name=f"{VERTEX}/endpoints/333")

    summary = json.loads(render.dumps(render.job_summary_json(job)))

    assert summary["backend"] == "vertex"
    assert summary["sub_state"] == "WAITING_FOR_QUOTA"
    assert summary["operation_name"] == f"{VERTEX}/tuningJobs/111"
    assert summary["tuned_endpoint_name"] == f"{VERTEX}/endpoints/333"
    assert summary["training_uri"] == "gs://stage/tk/dep/7/train.jsonl"
    assert render.job_summary_json(make_job())["backend"] is None


# ---- rows written to drive the terminal ---------------------------------------------------------------------

CONTROLS = "\x1b\x07\x9b\u202e\u2028"


def test_numbers_written_as_text_cannot_reach_the_terminal() -> None:
    """SQLite keeps text in an integer column (rows written before its CHECKs): `show` prints it escaped."""
    job = make_job(
        state=State.TUNING,
        priority="9\x1b[2J",
        attempts="1\x1b]0;owned\x07",
        completed_steps="3\x9b1m",
        total_steps="5\u202e",
        progress_percent=50.0,
    )

    page = render.job_details(job, [], NOW)

    assert not any(char in page for char in CONTROLS), page
    assert "9\\x1b[2J" in page and "1\\x1b]0;owned\\x07" in page and "step 3\\x9b1m/5\\u202e" in page


def test_json_escapes_c1_bidi_and_lone_surrogates() -> None:
    job = make_job(display_name="a\x9b31m\u202eb\udcff\u2028", last_error="x\x85y")

    printed = render.dumps(render.job_json(job))

    assert not any(char in printed for char in CONTROLS + "\x85\udcff"), printed
    printed.encode("utf-8")  # a lone surrogate cannot be printed: it must not be left in
    as_json = json.loads(printed)
    assert as_json["display_name"] == "a\x9b31m\u202eb\udcff\u2028"  # the same JSON, escaped
    assert as_json["last_error"] == "x\x85y"
    assert printed.splitlines()[0] == "{"  # indentation kept


def test_purges_table_cannot_drive_the_terminal() -> None:
    from tunekeeper.cli.purge import _table
    from tunekeeper.daemon.purger import PurgeOutcome
    from tunekeeper.db.store import PurgePolicy

    outcomes = [
        PurgeOutcome(PurgePolicy.FAILED, "tunedModels/m\x1b]0;owned\x07", 3, deleted=False, error="no\x9b2J"),
        PurgeOutcome(PurgePolicy.KEEP_UNTIL, "tunedModels/\u202eok", 4, deleted=True),
    ]

    table = _table(outcomes, dry_run=False)

    assert not any(char in table for char in CONTROLS), table
    assert [line.split() for line in table.splitlines()] == [
        ["JOB", "POLICY", "MODEL", "RESULT"],
        ["3", "failed", "tunedModels/m\\x1b]0;owned\\x07", "no\\x9b2J"],
        ["4", "keep_until", "tunedModels/\\u202eok", "deleted"],
    ]
