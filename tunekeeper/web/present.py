"""What the page shows, computed from the store's records: pure functions of records and a clock.

Progress: the daemon polls sparsely, so each job carries its last reading (steps, at `progress_changed_at`)
and the step rate the readings show; the browser moves the bar on from the reading at that rate, marked as an
estimate, and the next reading replaces it. Loss curves and the finished-jobs history are drawn here as SVG
geometry (no script needed to see them); a long curve is averaged into at most MAX_CHART_POINTS points.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tunekeeper.db.records import Job, JobEvent
from tunekeeper.db.views import JobSummary
from tunekeeper.states import CANCELLABLE, TERMINAL, State

MAX_CHART_POINTS = 240
CHART_WIDTH = 600
CHART_HEIGHT = 200
CHART_PAD = 8
CHART_LEFT = 48  # room for the loss axis's labels
FAILED = frozenset({State.FAILED, State.INVALID})


def number(value: object) -> float | None:
    """`value` as a finite float, or None: a hand-written column may hold anything."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def text(value: object) -> str:
    """A column shown as text; autoescaping in the templates makes it inert."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def state_text(state: State, sub_state: str | None, cancel_requested: bool) -> str:
    """`tuning (waiting for quota, cancel requested)`: Vertex AI's finer state while tuning, and a pending cancel."""
    notes = []
    finer = (sub_state or "").lower().replace("_", " ")
    if state == State.TUNING and finer and finer != state.value:
        notes.append(finer)
    if cancel_requested and state in CANCELLABLE:
        notes.append("cancel requested")
    return f"{state.value} ({', '.join(notes)})" if notes else state.value


def duration(seconds: float) -> str:
    """`42s`, `5m 3s`, `3h 12m`, `2d 4h`: two units at most, never negative."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def utc(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat() if moment else ""


def millis(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment else None


@dataclass(frozen=True, slots=True)
class Progress:
    """A job's last reading and what it says about the finish."""

    job_id: int
    state: State
    percent: float | None  # measured
    completed: int | None
    total: int | None
    rate: float | None  # steps per second between the first and the last reading that moved; None unknown
    reading_at: datetime | None  # when the daemon saw `completed` first
    started_at: datetime | None
    finish_at: datetime | None  # estimated

    @property
    def moving(self) -> bool:
        """Whether the browser may move the bar on between readings."""
        return self.state == State.TUNING and self.rate is not None and bool(self.total)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.job_id,
            "state": self.state.value,
            "percent": self.percent,
            "completed": self.completed,
            "total": self.total,
            "rate": self.rate,
            "reading_ms": millis(self.reading_at),
            "started_ms": millis(self.started_at),
            "finish_ms": millis(self.finish_at) if self.moving else None,
        }


def progress(job: Job | JobSummary) -> Progress:
    completed = job.completed_steps if isinstance(job.completed_steps, int) else None
    total = job.total_steps if isinstance(job.total_steps, int) and job.total_steps > 0 else None
    percent = number(job.progress_percent)
    if percent is None and completed is not None and total:
        percent = 100.0 * completed / total
    rate = None
    anchor_steps = job.anchor_steps if isinstance(job.anchor_steps, int) else None
    if job.anchor_at and job.progress_changed_at and completed is not None and anchor_steps is not None:
        elapsed = (job.progress_changed_at - job.anchor_at).total_seconds()
        if elapsed > 0 and completed > anchor_steps:
            rate = (completed - anchor_steps) / elapsed
    finish = None
    if rate and total and completed is not None and job.progress_changed_at:
        finish = job.progress_changed_at + timedelta(seconds=max(0, total - completed) / rate)
    return Progress(
        job.id,
        job.state,
        None if percent is None else max(0.0, min(100.0, percent)),
        completed,
        total,
        rate,
        job.progress_changed_at,
        job.submitted_at or job.created_at,
        finish,
    )


# ---- datasets -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatasetSize:
    examples: int
    characters: int


def dataset_size(data: object) -> DatasetSize | None:
    """Examples and characters of inline examples (their text counted, never shown); None if not a list."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    if not isinstance(data, list):
        return None
    return DatasetSize(len(data), sum(_characters(example) for example in data))


def _characters(value: object, key: str = "") -> int:
    if isinstance(value, str):
        return 0 if key == "role" else len(value)
    if isinstance(value, Mapping):
        return sum(_characters(item, str(name)) for name, item in value.items())
    if isinstance(value, list):
        return sum(_characters(item) for item in value)
    return 0


# ---- loss curve -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chart:
    """A line chart in SVG user units: `points` to draw, the axes' ends for the labels."""

    points: list[tuple[float, float]]
    recorded: int  # points in the record, before averaging
    x_label: str
    x_first: float
    x_last: float
    y_low: float
    y_high: float
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT

    @property
    def polyline(self) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.points)


def loss_points(snapshots: object, events: Sequence[JobEvent]) -> tuple[str, list[tuple[float, float]]]:
    """(what x counts, [(x, mean loss)]) from the row's `snapshots` (one per epoch: step, epoch, meanLoss),
    else from its `progress` events."""
    if isinstance(snapshots, str):
        try:
            snapshots = json.loads(snapshots)
        except ValueError:
            snapshots = None
    items: list[Mapping[str, Any]] = (
        [item for item in snapshots if isinstance(item, Mapping)] if isinstance(snapshots, list) else []
    )
    if not items:
        items = [event.detail for event in events if event.kind == "progress"]
    found: list[tuple[float | None, float | None, float]] = []
    for item in items:
        loss = number(item.get("meanLoss", item.get("mean_loss")))
        if loss is not None:
            found.append((number(item.get("step")), number(item.get("epoch")), loss))
    if not found:
        return "step", []
    if all(step is not None for step, _, _ in found):
        return "step", [(float(step or 0), loss) for step, _, loss in found]
    if all(epoch is not None for _, epoch, _ in found):
        return "epoch", [(float(epoch or 0), loss) for _, epoch, loss in found]
    return "point", [(float(index + 1), loss) for index, (_, _, loss) in enumerate(found)]


def downsample(points: Sequence[tuple[float, float]], limit: int = MAX_CHART_POINTS) -> list[tuple[float, float]]:
    """At most `limit` points: consecutive runs averaged, the first and last kept as they are."""
    if len(points) <= limit:
        return list(points)
    inner = points[1:-1]
    buckets = limit - 2
    averaged = []
    for index in range(buckets):
        bucket = inner[index * len(inner) // buckets : (index + 1) * len(inner) // buckets]
        if bucket:
            averaged.append((sum(x for x, _ in bucket) / len(bucket), sum(y for _, y in bucket) / len(bucket)))
    return [points[0], *averaged, points[-1]]


def loss_chart(snapshots: object, events: Sequence[JobEvent]) -> Chart | None:
    x_label, points = loss_points(snapshots, events)
    if not points:
        return None
    shown = downsample(points)
    xs = [x for x, _ in shown]
    ys = [y for _, y in shown]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    x_span = (x_high - x_low) or 1.0
    y_span = (y_high - y_low) or 1.0
    inner_w, inner_h = CHART_WIDTH - CHART_LEFT - CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
    scaled = [
        (
            CHART_LEFT + (x - x_low) / x_span * inner_w if x_high > x_low else (CHART_WIDTH + CHART_LEFT) / 2,
            CHART_PAD + (y_high - y) / y_span * inner_h if y_high > y_low else CHART_HEIGHT / 2,
        )
        for x, y in shown
    ]
    return Chart(scaled, len(points), x_label, x_low, x_high, y_low, y_high)


# ---- finished jobs over time -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    start: datetime
    label: str
    finished: int
    failed: int
    x: float = 0.0
    height: float = 0.0
    failed_height: float = 0.0


@dataclass(frozen=True, slots=True)
class Histogram:
    title: str
    bars: list[Bar]
    width: int
    height: int
    bar_width: float
    peak: int

    @property
    def total(self) -> int:
        return sum(bar.finished for bar in self.bars)


def histograms(finished_by_hour: Mapping[tuple[datetime, State], int], now: datetime) -> list[Histogram]:
    """The last 24 hours by hour and the last 7 days by (UTC) day; failed and invalid jobs counted apart."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = [hour - timedelta(hours=n) for n in range(23, -1, -1)]
    day = hour.replace(hour=0)
    days = [day - timedelta(days=n) for n in range(6, -1, -1)]
    by_hour: dict[datetime, tuple[int, int]] = {}
    by_day: dict[datetime, tuple[int, int]] = {}
    for (start, state), count in finished_by_hour.items():
        if state not in TERMINAL:
            continue
        failed = count if state in FAILED else 0
        for table, key in ((by_hour, start), (by_day, start.replace(hour=0))):
            done, bad = table.get(key, (0, 0))
            table[key] = (done + count, bad + failed)
    return [
        _histogram("last 24 hours", [(h, h.strftime("%H:00"), *by_hour.get(h, (0, 0))) for h in hours]),
        _histogram("last 7 days", [(d, d.strftime("%a %d"), *by_day.get(d, (0, 0))) for d in days]),
    ]


def _histogram(title: str, rows: list[tuple[datetime, str, int, int]], width: int = 480, height: int = 96) -> Histogram:
    peak = max((finished for _, _, finished, _ in rows), default=0)
    slot = width / max(1, len(rows))
    bars = [
        Bar(
            start,
            label,
            finished,
            failed,
            x=index * slot + 1,
            height=(finished / peak * height) if peak else 0.0,
            failed_height=(failed / peak * height) if peak else 0.0,
        )
        for index, (start, label, finished, failed) in enumerate(rows)
    ]
    return Histogram(title, bars, width, height, max(1.0, slot - 2), peak)
