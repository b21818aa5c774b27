"""What the status page reads: every query it makes, each bounded by an index or a scan budget.

The page never writes through these (cancel and retry go through JobStore) and never shares the daemon's
connection: `engine.make_read_engine` opens its own, whose transactions on SQLite are plain deferred reads (the
daemon's begin IMMEDIATE and take the write lock; a reader in WAL mode blocks no writer).

Big tables: counts and the finished-jobs history read the `(state, ...)` indexes only (migration 0006); lists
read one index range per state, newest first, a page at a time (keyset: `before` an id); a search by name or
label, which no index serves on both databases, looks at no more than SEARCH_WINDOW ids per page and says where
it stopped, so a rare word costs the same as a common one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tunekeeper.db.records import Job, JobEvent
from tunekeeper.db.store import label_is
from tunekeeper.db.tables import job_events, tuning_jobs
from tunekeeper.states import ACTIVE, TERMINAL, State

jobs = tuning_jobs.c

PAGE_SIZE = 50
SEARCH_WINDOW = 20_000  # ids a search by name or label looks through per page
IN_FLIGHT_LIMIT = 200
QUEUED_SHOWN = 10
FAILURES_SHOWN = 10
EVENTS_SHOWN = 1000
HISTORY = timedelta(days=7)
FAILED_STATES = (State.FAILED, State.INVALID)
LABEL_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# What a row of a list needs: no datasets, results or loss history.
SUMMARY_COLUMNS = (
    jobs.id,
    jobs.display_name,
    jobs.state,
    jobs.sub_state,
    jobs.backend,
    jobs.cancel_requested,
    jobs.priority,
    jobs.labels,
    jobs.progress_percent,
    jobs.completed_steps,
    jobs.total_steps,
    jobs.mean_loss,
    jobs.anchor_at,
    jobs.anchor_steps,
    jobs.progress_changed_at,
    jobs.last_error,
    jobs.tuned_model_name,
    jobs.created_at,
    jobs.submitted_at,
    jobs.finished_at,
)


@dataclass(frozen=True, slots=True)
class JobSummary:
    """A job as lists show it. Columns a producer writes are `object`: a plain-SQL row may hold anything."""

    id: int
    display_name: object
    state: State
    sub_state: str | None
    backend: str | None
    cancel_requested: bool
    priority: int
    labels: object
    progress_percent: float | None
    completed_steps: int | None
    total_steps: int | None
    mean_loss: float | None
    anchor_at: datetime | None
    anchor_steps: int | None
    progress_changed_at: datetime | None
    last_error: str | None
    tuned_model_name: str | None
    created_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: sa.RowMapping) -> JobSummary:
        values = dict(row)
        values["state"] = State(values["state"])
        values["cancel_requested"] = bool(values["cancel_requested"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class LiveOverview:
    counts: dict[State, int]  # the states before a finish
    in_flight: list[JobSummary]  # submitting, tuning, cancelling; oldest first
    next_queued: list[JobSummary]  # the queue's head, in the dispatcher's order
    recent_failures: list[JobSummary]  # failed and invalid, latest finish first


@dataclass(frozen=True, slots=True)
class FinishedOverview:
    counts: dict[State, int]  # the finished states
    # Finished jobs per UTC hour over HISTORY, by state: {(hour, state): count}
    finished_by_hour: dict[tuple[datetime, State], int]


@dataclass(frozen=True, slots=True)
class Overview:
    counts: dict[State, int]
    in_flight: list[JobSummary]
    next_queued: list[JobSummary]
    recent_failures: list[JobSummary]
    finished_by_hour: dict[tuple[datetime, State], int]

    @classmethod
    def of(cls, live: LiveOverview, finished: FinishedOverview) -> Overview:
        return cls(
            {**finished.counts, **live.counts},
            live.in_flight,
            live.next_queued,
            live.recent_failures,
            finished.finished_by_hour,
        )


@dataclass(frozen=True, slots=True)
class JobListView:
    """One view of the jobs list: every field comes from the URL, so a view can be bookmarked."""

    states: tuple[State, ...] = ()
    search: str = ""  # a part of the display name, any case
    label: tuple[str, str] | None = None  # key, value
    before: int | None = None  # keyset: only jobs with a smaller id
    limit: int = PAGE_SIZE
    window: int = SEARCH_WINDOW

    @property
    def scans(self) -> bool:
        """Whether the filter needs a look at each row (no index serves it): a bounded window per page."""
        return bool(self.search) or self.label is not None


@dataclass(frozen=True, slots=True)
class JobListPage:
    jobs: list[JobSummary]
    next_before: int | None  # the next page's `before`; None: no older jobs match
    searched_down_to: int | None = None  # a search stopped its window at this id without filling the page


@dataclass(frozen=True, slots=True)
class JobDetail:
    job: Job
    events: list[JobEvent]
    events_total: int
    newer_jobs: list[int] = field(default_factory=list)  # jobs that retried this one


class StatusViews:
    """The status page's reads. `queries` counts the statements run, for the benchmark's proof that viewers
    share them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self.queries = 0

    async def _rows(self, conn: AsyncConnection, query: sa.Executable) -> Sequence[sa.RowMapping]:
        self.queries += 1
        return (await conn.execute(query)).mappings().all()

    async def live_overview(self) -> LiveOverview:
        """What changes from second to second: jobs not yet finished (counted through one `(state, id)` range
        each: as many rows as are in flight or queued, whatever the size of the table) and the newest failures."""
        unfinished = sorted(set(State) - TERMINAL)
        async with self.engine.connect() as conn:
            counts = {
                State(row["state"]): int(row["n"])
                for row in await self._rows(
                    conn,
                    sa.select(jobs.state, sa.func.count().label("n"))
                    .where(jobs.state.in_(unfinished))
                    .group_by(jobs.state),
                )
            }
            in_flight = await self._summaries(
                conn, _newest_per_state(SUMMARY_COLUMNS, sorted(ACTIVE), (), IN_FLIGHT_LIMIT, oldest_first=True)
            )
            next_queued = await self._summaries(
                conn,
                sa.select(*SUMMARY_COLUMNS)
                .where(jobs.state == State.QUEUED)  # the dispatcher's partial index, in its order
                .order_by(jobs.priority.desc(), jobs.id)
                .limit(QUEUED_SHOWN),
            )
            recent_failures = await self._summaries(conn, _latest_finished(FAILED_STATES, FAILURES_SHOWN))
        return LiveOverview(counts, in_flight, next_queued, recent_failures)

    async def finished_overview(self, now: datetime) -> FinishedOverview:
        """Finished jobs: counted by state (the whole `(state, id)` index: on a table of millions, the one read
        here that grows with the table; the page reads it less often) and by hour over HISTORY."""
        async with self.engine.connect() as conn:
            counts = {
                State(row["state"]): int(row["n"])
                for row in await self._rows(
                    conn,
                    sa.select(jobs.state, sa.func.count().label("n"))
                    .where(jobs.state.in_(sorted(TERMINAL)))
                    .group_by(jobs.state),
                )
            }
            finished = await self._finished_by_hour(conn, now)
        return FinishedOverview(counts, finished)

    async def overview(self, now: datetime) -> Overview:
        return Overview.of(await self.live_overview(), await self.finished_overview(now))

    async def _summaries(self, conn: AsyncConnection, query: sa.Select[Any]) -> list[JobSummary]:
        return [JobSummary.from_row(row) for row in await self._rows(conn, query)]

    async def _finished_by_hour(self, conn: AsyncConnection, now: datetime) -> dict[tuple[datetime, State], int]:
        since = (now - HISTORY).replace(minute=0, second=0, microsecond=0)
        query = finished_by_hour_query(since, postgres=self.is_postgres)
        found: dict[tuple[datetime, State], int] = {}
        for row in await self._rows(conn, query):
            value = row["hour"]
            if isinstance(value, str):
                value = datetime.strptime(value[:13], "%Y-%m-%d %H")
            found[(value.replace(tzinfo=UTC), State(row["state"]))] = int(row["n"])
        return found

    async def job_list(self, view: JobListView) -> JobListPage:
        conditions: list[sa.ColumnElement[bool]] = []
        if view.search:
            conditions.append(sa.func.lower(jobs.display_name).contains(view.search.lower(), autoescape=True))
        if view.label is not None:
            conditions.append(label_is(*view.label))
        async with self.engine.connect() as conn:
            floor: int | None = None
            if view.scans:
                top = view.before
                if top is None:
                    newest = (await self._rows(conn, sa.select(sa.func.max(jobs.id).label("id"))))[0]["id"]
                    top = (newest or 0) + 1
                floor = max(1, top - view.window)
                conditions.append(jobs.id >= floor)
            if view.before is not None:
                conditions.append(jobs.id < view.before)
            query = _newest_per_state(SUMMARY_COLUMNS, view.states, conditions, view.limit + 1)
            found = await self._summaries(conn, query)
        if len(found) > view.limit:
            return JobListPage(found[: view.limit], found[view.limit - 1].id)
        if floor is not None and floor > 1:
            return JobListPage(found, floor, searched_down_to=floor)
        return JobListPage(found, None)

    async def job_detail(self, job_id: int) -> JobDetail | None:
        async with self.engine.connect() as conn:
            rows = await self._rows(conn, sa.select(tuning_jobs).where(jobs.id == job_id))
            if not rows:
                return None
            events = await self._rows(
                conn,
                sa.select(job_events)
                .where(job_events.c.job_id == job_id)
                .order_by(job_events.c.id)
                .limit(EVENTS_SHOWN + 1),
            )
            total = len(events)
            if total > EVENTS_SHOWN:
                counted = await self._rows(
                    conn, sa.select(sa.func.count().label("n")).where(job_events.c.job_id == job_id)
                )
                total = int(counted[0]["n"])
        shown = [JobEvent.from_row(row) for row in events[:EVENTS_SHOWN]]
        retried_as = [
            event.detail["new_job_id"]
            for event in shown
            if event.kind == "retried_as" and isinstance(event.detail.get("new_job_id"), int)
        ]
        return JobDetail(Job.from_row(rows[0]), shown, total, retried_as)


def finished_by_hour_query(since: datetime, *, postgres: bool) -> sa.Select[Any]:
    """Finished jobs since `since` by UTC hour and state: one `(state, finished_at)` range per finished state."""
    if postgres:
        hour: sa.ColumnElement[Any] = sa.func.date_trunc("hour", sa.func.timezone("UTC", jobs.finished_at))
    else:  # the fixed text form 'YYYY-MM-DD HH:MM:SS.ffffff' (db/types.py): its first 13 characters
        hour = sa.func.substr(jobs.finished_at, 1, 13)
    return (
        sa.select(hour.label("hour"), jobs.state, sa.func.count().label("n"))
        .where(jobs.state.in_(sorted(TERMINAL)), jobs.finished_at >= since)
        .group_by(hour, jobs.state)
    )


def _newest_per_state(
    columns: Sequence[sa.ColumnElement[Any]],
    states: Iterable[State],
    conditions: Iterable[sa.ColumnElement[bool]],
    limit: int,
    *,
    oldest_first: bool = False,
) -> sa.Select[Any]:
    """Jobs by id (newest first, or oldest), `limit` of them. Several states are read as one index range each
    (`(state, id)`) and merged: a planner given `state IN (...) ORDER BY id` walks the whole primary key instead
    when the states are rare."""

    def order(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return column.asc() if oldest_first else column.desc()

    wanted = list(states)
    if len(wanted) <= 1:
        where = [jobs.state == wanted[0]] if wanted else []
        return sa.select(*columns).where(*where, *conditions).order_by(order(jobs.id)).limit(limit)
    parts = [
        sa.select(*columns).where(jobs.state == state, *conditions).order_by(order(jobs.id)).limit(limit).subquery()
        for state in wanted
    ]
    merged = sa.union_all(*(sa.select(part) for part in parts)).subquery()
    return sa.select(merged).order_by(order(merged.c.id)).limit(limit)


def _latest_finished(states: Sequence[State], limit: int) -> sa.Select[Any]:
    """The last `limit` jobs to finish in `states`, latest first: one `(state, finished_at)` range each."""
    parts = [
        sa.select(*SUMMARY_COLUMNS)
        .where(jobs.state == state, jobs.finished_at.is_not(None))
        .order_by(jobs.finished_at.desc())
        .limit(limit)
        .subquery()
        for state in states
    ]
    merged = sa.union_all(*(sa.select(part) for part in parts)).subquery()
    return sa.select(merged).order_by(merged.c.finished_at.desc(), merged.c.id.desc()).limit(limit)
