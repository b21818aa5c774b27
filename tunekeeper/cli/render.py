"""Text for people: job tables, humanized ages, progress bars, loss sparklines, timelines.

Pure functions of records and a clock, so they are tested without a database. Everything a producer or the
service wrote (names, errors, event details) passes through `clean` first: a row written with plain SQL may
hold control characters, and terminal escape sequences must not reach the screen.
"""

from __future__ import annotations

import dataclasses
import json
import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, TypeGuard

from tunekeeper.db.records import Job, JobEvent
from tunekeeper.states import CANCELLABLE, State

SPARK_CHARS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 10
MAX_NAME_WIDTH = 40
MIN_NAME_WIDTH = 12
SPARK_WIDTH = 48
ELLIPSIS = "…"
_DETAIL_CLIP = 160
_VALUE_CLIP = 60


# ---- text ---------------------------------------------------------------------------------------------------


def clean(value: object, *, json_text: bool = False) -> str:
    """One printable line: control and other non-printing characters shown as escapes (\\n, \\x1b).

    The one sanitising function of everything printed: C0 and C1 controls, bidirectional and other format
    characters, separators other than the space and lone surrogates (text that was not UTF-8) are all
    non-printing, so none reaches the terminal as itself. `json_text`: `value` is JSON (`--json`), whose
    newlines are its indentation (JSON escapes those within strings); the others become JSON escapes
    (\\u009b), so it stays the same JSON."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    if json_text:
        return "".join(char if char.isprintable() or char == "\n" else f"\\u{ord(char):04x}" for char in text)
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def char_width(char: str) -> int:
    """Terminal columns a character takes: East Asian wide characters two, combining marks none."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    return sum(char_width(char) for char in text)


def truncate(text: str, width: int) -> str:
    """`text` cut to at most `width` columns, ending in an ellipsis when cut."""
    if display_width(text) <= width:
        return text
    if width <= 0:
        return ""
    kept: list[str] = []
    used = 0
    for char in text:
        if used + char_width(char) > width - 1:
            break
        kept.append(char)
        used += char_width(char)
    return "".join(kept) + ELLIPSIS


def pad(text: str, width: int, *, right: bool = False) -> str:
    fill = " " * max(0, width - display_width(text))
    return fill + text if right else text + fill


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right_aligned: Iterable[int] = ()) -> list[str]:
    """Columns sized to their widest cell, two spaces apart; trailing blanks trimmed."""
    aligned = set(right_aligned)
    widths = [display_width(h) for h in headers]
    for row in rows:
        for col, cell in enumerate(row):
            widths[col] = max(widths[col], display_width(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [pad(cell, widths[col], right=col in aligned) for col, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


# ---- times --------------------------------------------------------------------------------------------------


def humanize_seconds(seconds: float) -> str:
    """A duration as one unit, rounded down: `12s`, `5m`, `3h`, `2d`; never negative (clocks may disagree)."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86_400:
        return f"{whole // 3600}h"
    return f"{whole // 86_400}d"


def age(since: datetime, now: datetime) -> str:
    return humanize_seconds((now - since).total_seconds())


def timestamp(moment: datetime) -> str:
    """UTC, to the second: `2024-06-01 12:00:05`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# ---- progress and loss --------------------------------------------------------------------------------------


def percent_text(percent: float) -> str:
    """Rounded down and clamped, so a job at 99.7% never reads as 100% while it is still tuning."""
    return f"{_clamp_percent(percent)}%"


def progress_bar(percent: float, width: int = BAR_WIDTH) -> str:
    filled = _clamp_percent(percent) * width // 100
    return "█" * filled + "░" * (width - filled)


def progress_cell(job: Job) -> str:
    """`██████░░░░ 62%` for a tuning job with a known percentage; blank otherwise."""
    percent = _number(job.progress_percent)
    if job.state != State.TUNING or percent is None:
        return ""
    return f"{progress_bar(percent)} {percent_text(percent):>4}"


def _clamp_percent(percent: float) -> int:
    if not math.isfinite(percent):
        return 0
    return min(100, max(0, math.floor(percent)))


def _number(value: object) -> float | None:
    """`value` as a finite float, or None: a JSON or hand-written column may hold anything."""
    return float(value) if _is_number(value) else None


def _is_number(value: object) -> TypeGuard[int | float | Decimal]:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool) and math.isfinite(value)


def loss_points(snapshots: object) -> list[tuple[int | None, float]]:
    """(step, mean loss) from the job's `snapshots` column, in order; entries without a finite loss skipped.

    The service spells it `meanLoss`; our own records may say `mean_loss`. The column may also arrive as
    JSON text (a producer's or an older writer's), so that is parsed too.
    """
    if isinstance(snapshots, str):
        try:
            snapshots = json.loads(snapshots)
        except ValueError:
            return []
    if not isinstance(snapshots, list):
        return []
    points: list[tuple[int | None, float]] = []
    for item in snapshots:
        if not isinstance(item, dict):
            continue
        loss = item.get("meanLoss", item.get("mean_loss"))
        if not _is_number(loss):
            continue
        step = item.get("step")
        points.append((int(step) if _is_number(step) else None, float(loss)))
    return points


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH) -> str:
    """One character per value (averaged into `width` buckets when longer), scaled from min to max."""
    if not values:
        return ""
    if len(values) > width:
        buckets = [values[i * len(values) // width : (i + 1) * len(values) // width] for i in range(width)]
        values = [sum(bucket) / len(bucket) for bucket in buckets]
    low, high = min(values), max(values)
    if high == low:
        return SPARK_CHARS[len(SPARK_CHARS) // 2 - 1] * len(values)
    top = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[round((value - low) / (high - low) * top)] for value in values)


def loss_curve(snapshots: object) -> str | None:
    """`2.310 █▇▅▄▃▂▂▁▁ 0.120  (steps 1-200, 12 snapshots)`, or None when there is no loss to show."""
    points = loss_points(snapshots)
    if not points:
        return None
    losses = [loss for _, loss in points]
    steps = [step for step, _ in points if step is not None]
    span = f"steps {steps[0]}-{steps[-1]}, " if len(steps) > 1 else f"step {steps[0]}, " if steps else ""
    count = f"{len(points)} snapshot{'s' if len(points) != 1 else ''}"
    return f"{_loss(losses[0])} {sparkline(losses)} {_loss(losses[-1])}  ({span}{count})"


def _loss(value: float) -> str:
    return f"{value:.4g}"


# ---- jobs ---------------------------------------------------------------------------------------------------


def state_text(job: Job) -> str:
    """The state, with the service's finer state while tuning and a pending cancel request in brackets:
    `tuning (waiting for quota, cancel requested)`."""
    notes = [note for note in (sub_state_text(job),) if note]
    if job.cancel_requested and job.state in CANCELLABLE:
        notes.append("cancel requested")
    return f"{job.state.value} ({', '.join(notes)})" if notes else job.state.value


def sub_state_text(job: Job) -> str | None:
    """The service's finer state (Vertex AI: `WAITING_FOR_QUOTA`) in words, `waiting for quota`, while the job
    tunes; None otherwise (the column keeps the last one seen, which says nothing once the job has left tuning)."""
    if job.state != State.TUNING or not job.sub_state:
        return None
    return clean(job.sub_state).lower().replace("_", " ")


def backend_text(job: Job) -> str:
    return clean(job.backend or "")


def shows_backends(jobs: Iterable[Job]) -> bool:
    """Whether a listing names each job's service: only when some job ran elsewhere than the Gemini API (the
    default, and the only service of rows older than the backend column)."""
    return any(job.backend not in (None, "gemini") for job in jobs)


def jobs_table(jobs: Sequence[Job], now: datetime, *, width: int | None = None) -> str:
    """The `tunekeeper jobs` table; with a terminal `width`, names shrink so that rows fit on one line."""
    if not jobs:
        return "no jobs"
    with_backend = shows_backends(jobs)
    headers = ["ID", "NAME", "STATE", "PROGRESS", "MODEL", "AGE"]
    cells = [
        [
            str(job.id),
            clean(job.display_name),
            state_text(job),
            progress_cell(job),
            clean(job.tuned_model_name or ""),
            age(job.created_at, now),
        ]
        for job in jobs
    ]
    if with_backend:  # after the name: which service a job ran on reads before what it is doing there
        headers.insert(2, "BACKEND")
        for job, row in zip(jobs, cells, strict=True):
            row.insert(2, backend_text(job))
    last = len(headers) - 1
    name_width = min(MAX_NAME_WIDTH, max(display_width(row[1]) for row in cells))
    if width is not None:
        others = sum(
            max(display_width(row[col]) for row in [headers, *cells]) + 2 for col in range(len(headers)) if col != 1
        )
        name_width = max(MIN_NAME_WIDTH, min(name_width, width - others - 2))
    for row in cells:
        row[1] = truncate(row[1], name_width)
    return "\n".join(table(headers, cells, right_aligned=(0, last)))


def _request_summary(job: Job) -> list[tuple[str, str]]:
    if job.training_file is not None:
        training = f"file {clean(job.training_file)}"
    elif isinstance(job.training_data, list):
        training = f"inline, {_count(len(job.training_data), 'example')}"
    elif job.training_data is not None:
        training = "inline"
    else:
        training = "(none)"
    hyper = [
        f"base model {clean(job.base_model)}" if job.base_model is not None else "base model (default)",
        f"epochs {clean(job.epoch_count)}" if job.epoch_count is not None else "",
        f"batch size {clean(job.batch_size)}" if job.batch_size is not None else "",
        f"learning rate {clean(job.learning_rate)}" if job.learning_rate is not None else "",
        f"learning rate multiplier {clean(job.learning_rate_multiplier)}"
        if job.learning_rate_multiplier is not None
        else "",
    ]
    lines = [("training", training)]
    if job.training_uri:
        lines.append(("staged file", clean(job.training_uri)))
    lines.append(("request", ", ".join(part for part in hyper if part)))
    if job.tuned_model_id and job.backend != "vertex":  # Vertex AI chooses its own ids: the claim's means nothing
        lines.append(("model id", clean(job.tuned_model_id)))
    if job.priority:
        lines.append(("priority", clean(job.priority)))
    if isinstance(job.labels, dict) and job.labels:
        lines.append(("labels", ", ".join(f"{clean(k)}={clean(_scalar(v))}" for k, v in job.labels.items())))
    elif job.labels is not None and not isinstance(job.labels, dict):
        lines.append(("labels", truncate(clean(_compact(job.labels)), _DETAIL_CLIP)))
    if job.keep_until is not None:
        lines.append(("keep until", f"{timestamp(job.keep_until)} UTC"))
    if isinstance(job.eval_data, list) and job.eval_data:
        lines.append(("eval data", _count(len(job.eval_data), "pair")))
    return lines


def _progress_line(job: Job) -> str | None:
    parts: list[str] = []
    percent = _number(job.progress_percent)
    if percent is not None:
        parts.append(f"{progress_bar(percent)} {percent_text(percent)}")
    if job.completed_steps is not None and job.total_steps:
        parts.append(f"step {clean(job.completed_steps)}/{clean(job.total_steps)}")
    loss = _number(job.mean_loss)
    if loss is not None:
        parts.append(f"loss {_loss(loss)}")
    return "  ".join(parts) or None


def job_details(job: Job, events: Sequence[JobEvent], now: datetime) -> str:
    """The `tunekeeper show` page: request, state, results, loss curve and timeline."""
    fields: list[tuple[str, str]] = [("state", state_text(job))]
    if job.unreadable:  # a value written by hand that the daemon cannot read: shown as missing
        fields.append(("unreadable", f"column {clean(job.unreadable)}"))
    if shows_backends([job]):
        fields.append(("backend", backend_text(job)))
    progress = _progress_line(job)
    if progress and job.state in (State.TUNING, State.SUCCEEDED, State.CANCELLING):
        fields.append(("progress", progress))
    fields += _request_summary(job)
    fields.append(("attempts", clean(job.attempts)))
    if job.next_attempt_at is not None and job.state == State.QUEUED:
        fields.append(("next attempt", f"{timestamp(job.next_attempt_at)} UTC"))
    if job.operation_name:
        # Vertex AI keeps no operation for tuning: the row's handle is the tuning job itself.
        fields.append(("tuning job" if job.backend == "vertex" else "operation", clean(job.operation_name)))
    if job.tuned_model_name:
        fields.append(("model", clean(job.tuned_model_name)))
    if job.tuned_endpoint_name:
        fields.append(("endpoint", clean(job.tuned_endpoint_name)))
    if job.last_error:
        fields.append(("last error", clean(job.last_error)))
    for label, moment in (
        ("created", job.created_at),
        ("submitted", job.submitted_at),
        ("finished", job.finished_at),
        ("purged", job.purged_at),
    ):
        if moment is not None:
            fields.append((label, f"{timestamp(moment)} UTC ({age(moment, now)} ago)"))
    if _is_number(job.eval_score):
        fields.append(("eval score", f"{job.eval_score:.3g}"))
    curve = loss_curve(job.snapshots)
    if curve:
        fields.append(("loss", curve))

    label_width = max(display_width(label) for label, _ in fields)
    lines = [f"job {job.id}: {clean(job.display_name)}"]
    lines += [f"  {pad(label, label_width)}  {value}" for label, value in fields]
    outputs = eval_lines(job.eval_results)
    if outputs:
        lines += ["", "eval outputs", *outputs]
    lines += ["", "timeline (UTC)", *timeline(events)]
    return "\n".join(lines)


def eval_lines(results: object) -> list[str]:
    """One line per evaluated pair: `match`/`miss` when the result says, then its other fields as key=value.

    The evaluator stores {input, expected, output, match[, error]}; anything else is shown as it is.
    """
    if not isinstance(results, list):
        return []
    lines = []
    for index, item in enumerate(results):
        if isinstance(item, dict):
            match = item.get("match")
            mark = ("match" if match else "miss") if isinstance(match, bool) else ""
            fields = [
                f"{clean(key)}={truncate(clean(_scalar(value)), _VALUE_CLIP)}"
                for key, value in item.items()
                if not (key == "match" and mark)
            ]
            text = "  ".join(part for part in (f"{mark:<5}" if mark else "", *fields) if part)
        else:
            text = truncate(clean(_compact(item)), _DETAIL_CLIP)
        lines.append(f"  {index:>3}  {text}")
    return lines


def timeline(events: Sequence[JobEvent]) -> list[str]:
    """One line per event: time, kind, `from -> to` for state changes, and the detail as key=value."""
    if not events:
        return ["  (no events)"]
    rows = [
        [
            timestamp(event.at),
            clean(event.kind),
            f"{event.from_state or '?'} -> {event.to_state}" if event.to_state else "",
            truncate(event_detail(event.detail), _DETAIL_CLIP),
        ]
        for event in events
    ]
    return ["  " + line for line in table(("TIME", "EVENT", "STATE", "DETAIL"), rows)]


def event_detail(detail: object) -> str:
    if not isinstance(detail, Mapping):  # a row written by hand may hold any JSON
        return clean(_compact(detail))
    return " ".join(f"{clean(key)}={clean(_scalar(value))}" for key, value in detail.items())


def _scalar(value: object) -> str:
    return value if isinstance(value, str) else _compact(value)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


# ---- JSON ---------------------------------------------------------------------------------------------------

SUMMARY_FIELDS = (
    "id",
    "display_name",
    "state",
    "cancel_requested",
    "priority",
    "attempts",
    "progress_percent",
    "completed_steps",
    "total_steps",
    "mean_loss",
    "tuned_model_id",
    "tuned_model_name",
    "backend",
    "sub_state",
    "operation_name",
    "tuned_endpoint_name",
    "training_uri",
    "last_error",
    "eval_score",
    "created_at",
    "submitted_at",
    "finished_at",
    "purged_at",
)
"""What `tunekeeper jobs --json` gives per job: everything but the bulky datasets, snapshots and results."""


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _plain(value: object) -> Any:
    """A value JSON can hold as is: datetimes as ISO 8601 strings, states as their names."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, State):
        return value.value
    return value


def job_json(job: Job) -> dict[str, Any]:
    return {field.name: _plain(getattr(job, field.name)) for field in dataclasses.fields(job)}


def job_summary_json(job: Job) -> dict[str, Any]:
    return {name: _plain(getattr(job, name)) for name in SUMMARY_FIELDS}


def event_json(event: JobEvent) -> dict[str, Any]:
    return {field.name: _plain(getattr(event, field.name)) for field in dataclasses.fields(event)}


def dumps(value: object) -> str:
    """Indented JSON for `--json`: readable non-ASCII text, non-printing characters escaped (`clean`)."""
    return clean(json.dumps(value, indent=2, ensure_ascii=False, default=_json_default), json_text=True)
