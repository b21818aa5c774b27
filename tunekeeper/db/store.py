"""JobStore: every query tunekeeper makes, in one place.

Each state change is one transaction that updates the job row, guarded by the state (and, for leased work,
the lease owner) the caller last saw, and appends its job_events row. A guard that no longer holds changes
nothing and is logged as `transition_skipped`: somebody else moved the job first.

Claims take rows with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so replicas never take the same job; on SQLite
every transaction begins IMMEDIATE (see engine.make_engine), which serializes writers up front.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tunekeeper import naming
from tunekeeper.db.groupcommit import GroupCommit
from tunekeeper.db.records import Job, JobEvent, NewJob, UnreadableRow, unreadable_column
from tunekeeper.db.tables import deployment, job_events, leases, tuning_jobs
from tunekeeper.db.types import UNREADABLE, load_json
from tunekeeper.logs import get_logger, redact
from tunekeeper.states import ACTIVE, CANCELLABLE, MAY_LEAVE_A_MODEL, TERMINAL, State, Transition, check, sources

log = get_logger(__name__)

jobs = tuning_jobs.c
# Serializes submission claims across replicas, so that the count of active jobs and the claim that raises
# it are one atomic step: max_active_jobs holds for all replicas together.
_DISPATCH_LOCK_KEY = 0x74756E65  # "tune"

# Columns that may hold megabytes (a producer's inline examples, the evaluation's outputs). A claim reads them
# after its commit, if its worker needs them at all: on SQLite the claim holds the database's write lock, and
# every producer's INSERT waits for it.
_LARGE_COLUMNS = ("training_data", "eval_data", "eval_results")
_CLAIMED_COLUMNS = [sa.null().label(c.name) if c.name in _LARGE_COLUMNS else c for c in tuning_jobs.c]
# The columns a Job cannot be made without.
_ALWAYS_READ = ("id", "state", "cancel_requested", "priority", "attempts", "created_at")
_DECODE_INLINE_LIMIT = 256 * 1024  # characters of JSON decoded on the event loop; more goes to a thread

# How long a dispatch claim waits for another replica's: a claim takes milliseconds, so a longer hold is a
# replica frozen mid-claim, and this one skips the round rather than stop with it.
DISPATCH_LOCK_WAIT = 2.0
# A change to a job whose row someone else holds locked is tried again after this, doubling up to the maximum.
_ROW_LOCKED_RETRY, _ROW_LOCKED_MAX_RETRY = 0.05, 1.0
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's lock_not_available: lock_timeout ran out, or NOWAIT met a lock

Clock = Callable[[], datetime]


def _sqlstate(error: sa.exc.DBAPIError) -> str | None:
    """The SQLSTATE of a PostgreSQL error, from the driver's exception or the one it wraps."""
    for candidate in (error.orig, getattr(error.orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def utcnow() -> datetime:
    return datetime.now(UTC)


class TransitionObserver(Protocol):
    def transition(self, name: str, from_state: str, to_state: str) -> None: ...


class CancelOutcome(StrEnum):
    REQUESTED = "requested"
    ALREADY_REQUESTED = "already_requested"
    FINISHED = "finished"
    NOT_FOUND = "not_found"


class PurgePolicy(StrEnum):
    CANCELLED = "cancelled"
    FAILED = "failed"
    KEEP_UNTIL = "keep_until"
    MAX_AGE = "max_age"
    ORPHAN = "orphan"


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing or a bulk command is about: all conditions hold; an empty filter selects every job."""

    states: frozenset[State] = frozenset()
    labels: tuple[tuple[str, str], ...] = ()  # each label key must hold this value
    since: datetime | None = None  # created at or after

    def clauses(self) -> list[sa.ColumnElement[bool]]:
        found: list[sa.ColumnElement[bool]] = []
        if self.states:
            found.append(jobs.state.in_(sorted(state.value for state in self.states)))
        found += [label_is(key, value) for key, value in self.labels]
        if self.since is not None:
            found.append(jobs.created_at >= self.since)
        return found


EVERY_JOB = JobFilter()


def label_is(key: str, value: str) -> sa.ColumnElement[bool]:
    """The job carries label `key` with `value` (JSON on SQLite, jsonb on PostgreSQL: `->>` on both)."""
    condition: sa.ColumnElement[bool] = jobs.labels[key].as_string() == value
    return condition


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """A replica (daemon) that holds leases now: its jobs in hand and the named leases it holds."""

    owner: str
    jobs: int
    leases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Census:
    counts: dict[State, int]
    oldest: dict[State, datetime]
    """For each unfinished state with jobs: when its longest-waiting job entered it (approximately)."""


@dataclass(frozen=True, slots=True)
class PurgeCandidate:
    job: Job
    policy: PurgePolicy

    @property
    def model_name(self) -> str:
        return self.job.tuned_model_name or f"tunedModels/{self.job.tuned_model_id}"

    @property
    def create_unconfirmed(self) -> bool:
        """A create was sent for the job but never answered (the job was never accepted): it may still land."""
        return create_unconfirmed(self.job)


def create_unconfirmed(job: Job) -> bool:
    """Whether a create was sent for `job` that the service never confirmed (no `accepted` transition): such a
    create may still land on the service after the job has ended, so "nothing there" is not yet final."""
    return job.attempts > 0 and job.submitted_at is None


@dataclass(frozen=True, slots=True)
class PurgeRules:
    """Which finished jobs' models may go; durations count from the job's finish."""

    cancelled_after: timedelta
    failed_after: timedelta
    max_age: timedelta | None


@dataclass(frozen=True, slots=True)
class RowChange:
    """One write to a job row its caller has seen in `job.state` (and, if leased, holds): a transition, with
    `detail` for its event, or, with no transition, a poll's record of a tuning job (`detail` an optional
    progress event)."""

    job: Job
    transition: Transition | None
    values: Mapping[str, Any]
    detail: Mapping[str, Any] | None

    @property
    def to_state(self) -> State:
        return check(self.transition, self.job.state) if self.transition else State.TUNING

    def holds(self, state: State, lease_owner: str | None) -> bool:
        """Whether the row, found in `state` held by `lease_owner`, is still as the caller saw it."""
        expected = self.job.state if self.transition else State.TUNING
        if state != expected:
            return False
        return expected not in (State.SUBMITTING, State.CANCELLING) or lease_owner == self.job.lease_owner


def _submittable(now: datetime) -> sa.ColumnElement[bool]:
    """A queued job the dispatcher may take now: no cancel requested, and no retry waiting to come due."""
    return (
        (jobs.state == State.QUEUED)
        & jobs.cancel_requested.is_(False)
        & (jobs.next_attempt_at.is_(None) | (jobs.next_attempt_at <= now))
    )


def _decode_json_texts(rows: Mapping[int, Sequence[str | None]]) -> dict[int, list[Any]]:
    """JSON columns read as text, decoded as the column types decode them (SQL NULL stays None; text that is not
    JSON, or nested too deep, becomes types.UNREADABLE)."""
    return {key: [None if text is None else load_json(text) for text in texts] for key, texts in rows.items()}


def _moment(value: object) -> datetime | None:
    """A timestamp read from SQL (`min(...)`), or None for none or one that cannot be read (types.UNREADABLE)."""
    return value if isinstance(value, datetime) else None


def _is_lost_database(error: Exception) -> bool:
    """An error that says nothing about the data written: retrying a batch item by item would only repeat it."""
    return isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError, OSError, TimeoutError))


class JobStore:
    def __init__(self, engine: AsyncEngine, *, clock: Clock = utcnow, observer: TransitionObserver | None = None):
        self.engine = engine
        self.clock = clock
        self.observer = observer
        self.is_postgres = engine.dialect.name == "postgresql"
        # Transitions and poll records from all of the daemon's concurrent handlers, written in shared
        # transactions (see groupcommit): under load one commit records many jobs.
        self._changes: GroupCommit[RowChange, bool | None] = GroupCommit(
            self._write_changes, isolate=lambda error: not _is_lost_database(error)
        )

    # ---- producers: the CLI's side of the contract (plain SQL works just as well) ----

    async def add_job(self, job: NewJob) -> int:
        values = {field.name: getattr(job, field.name) for field in dataclasses.fields(job)}
        async with self.engine.begin() as conn:
            job_id: int = (await conn.execute(tuning_jobs.insert().values(**values).returning(jobs.id))).scalar_one()
        return job_id

    async def request_cancel(self, job_id: int) -> tuple[CancelOutcome, State | None]:
        async with self.engine.begin() as conn:
            row = (await conn.execute(sa.select(jobs.state, jobs.cancel_requested).where(jobs.id == job_id))).first()
            if row is None:
                return CancelOutcome.NOT_FOUND, None
            state = State(row.state)
            if state not in CANCELLABLE:
                return CancelOutcome.FINISHED, state
            if row.cancel_requested:
                return CancelOutcome.ALREADY_REQUESTED, state
            await conn.execute(tuning_jobs.update().where(jobs.id == job_id).values(cancel_requested=True))
        return CancelOutcome.REQUESTED, state

    async def copy_job(self, job_id: int) -> int | None:
        """Queue a new job with the same request as `job_id` (a new id, so a new model id); None if missing."""
        request_columns = [c for c in NewJob.__dataclass_fields__ if c != "tuned_model_id"]
        async with self.engine.begin() as conn:
            row = (
                (await conn.execute(sa.select(*(jobs[c] for c in request_columns)).where(jobs.id == job_id)))
                .mappings()
                .first()
            )
            if row is None:
                return None
            column = unreadable_column(dict(row))
            if column is not None:  # a copy would carry it, or fail to write it
                raise UnreadableRow(job_id, column)
            new_id: int = (await conn.execute(tuning_jobs.insert().values(**row).returning(jobs.id))).scalar_one()
            await self._append_events(conn, [(job_id, "retried_as", None, None, {"new_job_id": new_id})])
        return new_id

    # ---- reading ----

    async def get_job(self, job_id: int) -> Job | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(tuning_jobs).where(jobs.id == job_id))).mappings().first()
        return Job.from_row(row, shown=True) if row else None

    async def list_jobs(
        self, where: JobFilter = EVERY_JOB, *, limit: int = 100, columns: Iterable[str] | None = None
    ) -> list[Job]:
        """The jobs `where` selects, newest first. `columns`: read only these (and the few every Job needs); the
        others are None, so that a listing never loads the rows' training data."""
        if columns is None:
            selected: list[sa.ColumnElement[Any]] = list(tuning_jobs.c)
        else:
            read = {*columns, *_ALWAYS_READ}
            selected = [c if c.name in read else sa.null().label(c.name) for c in tuning_jobs.c]
        query = sa.select(*selected).where(*where.clauses()).order_by(jobs.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [Job.from_row(row, shown=True) for row in rows]

    async def job_ids(self, where: JobFilter) -> list[int]:
        """The ids of the jobs `where` selects, oldest first (what a bulk cancel or retry acts on)."""
        query = sa.select(jobs.id).where(*where.clauses()).order_by(jobs.id)
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def events(self, job_id: int | None) -> list[JobEvent]:
        where = job_events.c.job_id.is_(None) if job_id is None else job_events.c.job_id == job_id
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(job_events).where(where).order_by(job_events.c.id))).mappings().all()
        return [JobEvent.from_row(row) for row in rows]

    async def count_by_state(self) -> dict[State, int]:
        return (await self.census()).counts

    async def census(self) -> Census:
        """Jobs by state, and when the longest-waiting job of each unfinished state entered it, in one scan."""
        query = sa.select(
            jobs.state,
            sa.func.count(),
            sa.func.min(jobs.created_at),
            sa.func.min(jobs.updated_at),
            sa.func.min(jobs.submitted_at),
        ).group_by(jobs.state)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        counts: dict[State, int] = {}
        oldest: dict[State, datetime] = {}
        for name, count, created, updated, submitted in rows:
            state = State(name)
            counts[state] = count
            # what "entered the state" means for each: a tuning job since its submission, a queued one since
            # its creation, the others since their last change
            since = {State.QUEUED: created, State.TUNING: submitted or updated}.get(state, updated)
            if state not in TERMINAL and since is not None:
                oldest[state] = since
        return Census(counts, oldest)

    async def lease_holders(self) -> list[LeaseHolder]:
        """Who holds unexpired leases now: each owner's jobs in hand and named leases (the purge), by owner."""
        now = self.clock()
        held_jobs = (
            sa.select(jobs.lease_owner, sa.func.count())
            .where(jobs.lease_owner.is_not(None), jobs.lease_expires_at > now)
            .group_by(jobs.lease_owner)
        )
        named = sa.select(leases.c.owner, leases.c.name).where(leases.c.owner.is_not(None), leases.c.expires_at > now)
        async with self.engine.connect() as conn:
            counts: dict[str, int] = dict((await conn.execute(held_jobs)).tuples().all())
            names = (await conn.execute(named.order_by(leases.c.name))).tuples().all()
        owners = sorted(counts.keys() | {owner for owner, _ in names})
        return [
            LeaseHolder(owner, counts.get(owner, 0), tuple(name for holder, name in names if holder == owner))
            for owner in owners
        ]

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.select(1))

    async def deployment_id(self) -> str:
        """This database's identity, made with its schema: the mark on the work its jobs start."""
        async with self.engine.connect() as conn:
            identity = await conn.scalar(sa.select(deployment.c.id))
        if not isinstance(identity, str):
            raise RuntimeError("the database has no deployment identity: run `tunekeeper db upgrade`")
        return identity

    async def existing_job_ids(self, job_ids: Iterable[int]) -> set[int]:
        """Which of `job_ids` have a row (for telling a model whose job was deleted)."""
        wanted = list(job_ids)
        if not wanted:
            return set()
        async with self.engine.connect() as conn:
            return set((await conn.scalars(sa.select(jobs.id).where(jobs.id.in_(wanted)))).all())

    async def next_submission_due(self) -> datetime | None:
        """When the dispatcher next has something to claim: a retry coming due, or a submitter's lease running out."""
        query = sa.select(sa.func.min(jobs.next_attempt_at)).where(
            jobs.state == State.QUEUED, jobs.cancel_requested.is_(False)
        )
        leases = sa.select(sa.func.min(jobs.lease_expires_at)).where(jobs.state == State.SUBMITTING)
        async with self.engine.connect() as conn:
            retry = _moment((await conn.execute(query)).scalar())
            lease = _moment((await conn.execute(leases)).scalar())
        return min((at for at in (retry, lease) if at is not None), default=None)

    async def next_poll_due(self) -> datetime | None:
        """When the earliest tuning job's poll falls due (the poller sleeps until then)."""
        query = sa.select(sa.func.min(jobs.next_poll_at)).where(
            jobs.state == State.TUNING, jobs.cancel_requested.is_(False)
        )
        async with self.engine.connect() as conn:
            return _moment((await conn.execute(query)).scalar())

    async def submission_waiting(self) -> bool:
        """Whether a queued job is due for submission: after a claim that came back short, one left means the
        tuning quota holds it back. An indexed read, unlike counting the jobs by state."""
        query = sa.select(jobs.id).where(_submittable(self.clock())).limit(1)
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def cancel_work_pending(self) -> bool:
        """Whether any cancel request or cancellation is outstanding: a cheap read (both are indexed) that
        spares the canceller its claim transactions when there is nothing to do, which is nearly always."""
        requested = sa.select(jobs.id).where(jobs.cancel_requested.is_(True)).limit(1)
        cancelling = sa.select(jobs.id).where(jobs.state == State.CANCELLING).limit(1)
        async with self.engine.connect() as conn:
            for query in (requested, cancelling):
                if (await conn.execute(query)).first() is not None:
                    return True
        return False

    async def next_cancel_due(self) -> datetime | None:
        """When a cancel request next becomes the canceller's to carry out: now for a queued or tuning job, when
        the lease runs out for a submission still in flight or a cancellation under way; None when none waits."""
        requested = jobs.cancel_requested.is_(True)
        workable = sa.select(jobs.id).where(requested, jobs.state.in_([State.QUEUED, State.TUNING])).limit(1)
        leased = sa.select(sa.func.min(jobs.lease_expires_at)).where(
            (requested & (jobs.state == State.SUBMITTING)) | (jobs.state == State.CANCELLING)
        )
        async with self.engine.connect() as conn:
            if (await conn.execute(workable)).first() is not None:
                return self.clock()
            return _moment((await conn.execute(leased)).scalar())

    # ---- submission ----

    async def claim_for_submission(
        self, owner: str, *, limit: int, max_active: int, lease_seconds: float, model_id_prefix: str = ""
    ) -> list[Job]:
        """Take due queued jobs (and submissions whose submitter's lease ran out) into `submitting`.

        Queued jobs are taken only while the jobs holding a tuning slot stay below `max_active`. Each claimed
        job gets its deterministic tuned_model_id now, before any create is sent, so that a retried or
        taken-over create names the same model. On PostgreSQL, when another replica holds the dispatch lock (or
        the claim waits for any lock) longer than DISPATCH_LOCK_WAIT, this round takes nothing.
        """
        try:
            claimed = await self._claim_submissions(
                owner, limit=limit, max_active=max_active, lease_seconds=lease_seconds, model_id_prefix=model_id_prefix
            )
            return await self._with_large_columns(claimed, "training_data", "eval_data")
        except sa.exc.DBAPIError as exc:
            if _sqlstate(exc) != _LOCK_NOT_AVAILABLE:
                raise
            log.info("dispatch_lock_busy", waited=DISPATCH_LOCK_WAIT)
            return []

    async def _claim_submissions(
        self, owner: str, *, limit: int, max_active: int, lease_seconds: float, model_id_prefix: str
    ) -> list[Job]:
        now = self.clock()
        lease_until = now + timedelta(seconds=lease_seconds)
        async with self.engine.begin() as conn:
            if self.is_postgres:
                await self._take_dispatch_lock(conn)
            abandoned = await self._lock_rows(
                conn,
                (jobs.state == State.SUBMITTING) & (jobs.lease_expires_at < now) & jobs.cancel_requested.is_(False),
                order_by=[jobs.id],
                limit=limit,
            )
            active = (
                await conn.execute(sa.select(sa.func.count()).where(jobs.state.in_([s.value for s in ACTIVE])))
            ).scalar_one()
            room = min(limit - len(abandoned), max_active - active)
            queued = []
            if room > 0:
                queued = await self._lock_rows(
                    conn, _submittable(now), order_by=[jobs.priority.desc(), jobs.id], limit=room
                )
            claimed = abandoned + queued
            if not claimed:
                return []
            model_ids = {
                job.id: job.tuned_model_id or naming.tuned_model_id(str(job.display_name), job.id, model_id_prefix)
                for job in claimed
            }
            taken = await self._model_ids_taken_elsewhere(conn, model_ids)
            moved: list[Job] = []
            changes: list[tuple[Job, Transition, State, dict[str, Any]]] = []
            updates: list[tuple[int, Mapping[str, Any]]] = []
            for job in claimed:
                if job.id in taken:
                    error = (
                        f"tuned_model_id {model_ids[job.id]!r} is already used by job {taken[job.id]}; "
                        "set tuned_model_id to a unique value"
                    )
                    values: dict[str, Any] = {"last_error": error, "finished_at": now, "lease_owner": None}
                    changes.append((job, Transition.REJECTED, State.INVALID, {"error": error}))
                else:
                    values = {
                        "tuned_model_id": model_ids[job.id],
                        "lease_owner": owner,
                        "lease_expires_at": lease_until,
                        "attempts": job.attempts + 1,
                    }
                    moved.append(dataclasses.replace(job, state=State.SUBMITTING, **values))
                    detail = {"attempt": job.attempts + 1, "owner": owner}
                    if job.state == State.SUBMITTING:
                        detail["taken_over_from"] = job.lease_owner
                    changes.append((job, Transition.CLAIMED, State.SUBMITTING, detail))
                updates.append((job.id, {"state": changes[-1][2], "updated_at": now, **values}))
            await self._update_rows(conn, updates)
            await self._append_events(
                conn, [(job.id, name, job.state, to, detail) for job, name, to, detail in changes]
            )
        for job, name, to, detail in changes:
            self._announce(job, name, to, detail)
        return moved

    async def submission_lost(self, job: Job, owner: str) -> str | None:
        """The fence before a create is sent: None while `owner` still holds `job`'s submission, else what became
        of it. A submitter that was frozen, or whose database calls stalled, past its lease may have lost the job
        to another replica, a cancel or a purge; its create must not reach the service then."""
        query = sa.select(jobs.state, jobs.lease_owner, jobs.lease_expires_at).where(jobs.id == job.id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return "its row is gone"
        if row.state != State.SUBMITTING:
            return f"it is {row.state} now"
        if row.lease_owner != owner:
            return f"{row.lease_owner or 'nobody'} holds it now"
        if row.lease_expires_at is None or row.lease_expires_at <= self.clock():
            return "its lease ran out"
        return None

    async def renew_leases(self, owner: str, job_ids: Sequence[int], lease_seconds: float) -> None:
        """Move the leases `owner` holds on these jobs a lease ahead. Recording an outcome clears the lease owner,
        so a renewal that arrives after it leaves the job alone."""
        if not job_ids:
            return
        until = self.clock() + timedelta(seconds=lease_seconds)
        held: sa.ColumnElement[bool] = jobs.id.in_(job_ids) & (jobs.lease_owner == owner)
        if self.is_postgres:
            # A row someone else has locked (a producer's open transaction) is renewed next time: waiting for it
            # would let every other lease in the statement lapse.
            held = jobs.id.in_(sa.select(jobs.id).where(held).with_for_update(skip_locked=True))
        async with self.engine.begin() as conn:
            await conn.execute(tuning_jobs.update().where(held).values(lease_expires_at=until))

    async def release_leases(self, owner: str) -> int:
        """Let other replicas take this owner's unfinished work at once (graceful shutdown)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                tuning_jobs.update()
                .where(jobs.lease_owner == owner, jobs.state.in_([State.SUBMITTING, State.CANCELLING]))
                .values(lease_expires_at=self.clock())
            )
        return result.rowcount

    async def mark_accepted(
        self,
        job: Job,
        *,
        operation_name: str | None,
        tuned_model_name: str | None,
        total_steps: int | None,
        adopted: bool,
        backend: str | None = None,
        training_uri: str | None = None,
        first_poll_at: datetime | None = None,
    ) -> bool:
        """The service took the job. Its poll history starts now; the first poll is at `first_poll_at`
        (default: at once)."""
        now = self.clock()
        return await self._move(
            job,
            Transition.ACCEPTED,
            {
                "operation_name": operation_name,
                "tuned_model_name": tuned_model_name,
                "backend": backend,
                "training_uri": training_uri,
                "total_steps": total_steps,
                "completed_steps": 0,
                "progress_percent": 0.0,
                "submitted_at": now,
                "progress_changed_at": now,
                "next_poll_at": first_poll_at or now,
                "lease_owner": None,
                "lease_expires_at": None,
                "last_error": None,
            },
            {"operation": operation_name, "tuned_model": tuned_model_name, "adopted": adopted},
        )

    async def schedule_retry(self, job: Job, *, error: str, retry_at: datetime, refund: bool = False) -> bool:
        """Back to the queue until `retry_at`. `refund`: the service refused for want of quota (nothing was
        started), so this attempt does not count towards giving up; attempts stays at least 1, since an earlier
        attempt's create may have landed and must still be looked for."""
        values: dict[str, Any] = {
            "last_error": error,
            "next_attempt_at": retry_at,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        detail: dict[str, Any] = {"error": error, "retry_at": retry_at.isoformat(), "attempt": job.attempts}
        if refund:
            values["attempts"] = max(job.attempts - 1, 1)
            detail["refunded"] = True
        return await self._move(job, Transition.RETRY, values, detail)

    async def mark_invalid(self, job: Job, *, error: str) -> bool:
        return await self._finish(job, Transition.REJECTED, error)

    async def mark_submit_failed(self, job: Job, *, error: str) -> bool:
        return await self._finish(job, Transition.SUBMIT_FAILED, error)

    # ---- polling ----

    async def claim_due_polls(self, *, limit: int, lease_seconds: float) -> list[Job]:
        """Take tuning jobs whose poll is due; their next_poll_at moves a lease ahead, so a poller that
        dies before recording the result leaves a job that simply becomes due again."""
        due = await self._claim_due(
            (jobs.state == State.TUNING) & jobs.cancel_requested.is_(False), limit=limit, lease_seconds=lease_seconds
        )
        return due  # eval_data is read once a job succeeds (names_eval_pairs), not at every poll

    async def record_progress(
        self, job: Job, progress: Mapping[str, Any], *, next_poll_at: datetime, event: Mapping[str, Any] | None
    ) -> bool:
        """Store what a poll saw of a still-running job. Not a state change; `event` adds a timeline row."""
        values = {**progress, "next_poll_at": next_poll_at, "last_polled_at": self.clock()}
        return await self._write_change(RowChange(job, None, values, event))

    async def mark_succeeded(self, job: Job, *, model: Mapping[str, Any], wants_eval: bool) -> bool:
        now = self.clock()
        values = {**model, "finished_at": now, "last_polled_at": now, "next_poll_at": now if wants_eval else None}
        tuned_model = model.get("tuned_model_name", job.tuned_model_name)
        return await self._move(job, Transition.SUCCEEDED, values, {"tuned_model": tuned_model})

    async def mark_tuning_failed(self, job: Job, *, error: str) -> bool:
        return await self._finish(job, Transition.TUNING_FAILED, error)

    async def mark_cancelled_elsewhere(self, job: Job, *, error: str) -> bool:
        """The service reports the job's work cancelled, by someone other than tunekeeper."""
        return await self._finish(job, Transition.CANCELLED_ELSEWHERE, error)

    # ---- testing the finished model ----

    async def claim_pending_evals(self, *, limit: int, lease_seconds: float) -> list[Job]:
        """Succeeded jobs with eval_data whose evaluation is due (next_poll_at doubles as its due time)."""
        due = (jobs.state == State.SUCCEEDED) & (jobs.next_poll_at <= self.clock())
        async with self.engine.connect() as conn:
            # Asked after every finished job, and almost never with work: a read first spares the write lock.
            if (await conn.execute(sa.select(jobs.id).where(due).limit(1))).first() is None:
                return []
        claimed = await self._claim_due(jobs.state == State.SUCCEEDED, limit=limit, lease_seconds=lease_seconds)
        return await self._with_large_columns(claimed, "eval_data")

    async def renew_eval_claims(self, job_ids: Sequence[int], lease_seconds: float) -> None:
        """Keep evaluations in progress claimed: their due time (next_poll_at) moves a lease ahead. Recording
        the outcome clears it, so a renewal that arrives after it leaves the job alone."""
        if not job_ids:
            return
        until = self.clock() + timedelta(seconds=lease_seconds)
        async with self.engine.begin() as conn:
            await conn.execute(
                tuning_jobs.update()
                .where(jobs.id.in_(job_ids), jobs.state == State.SUCCEEDED, jobs.next_poll_at.is_not(None))
                .values(next_poll_at=until)
            )

    async def record_eval(
        self, job: Job, *, results: list[dict[str, Any]] | None, score: float | None, error: str | None
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                tuning_jobs.update()
                .where(jobs.id == job.id)
                .values(eval_results=results, eval_score=score, next_poll_at=None, updated_at=self.clock())
            )
            detail: dict[str, Any] = {"score": score, "examples": len(results or [])}
            if error:
                detail["error"] = error
            await self._append_events(
                conn, [(job.id, "evaluated" if error is None else "eval_failed", None, None, detail)]
            )

    # ---- cancellation ----

    async def cancel_queued(self) -> list[Job]:
        """Queued jobs never sent to the service go straight to `cancelled` (the request cleared, as it is
        carried out). A queued job waiting to retry may own a model already, so it goes through the canceller."""
        now = self.clock()
        async with self.engine.begin() as conn:
            found = await self._lock_rows(
                conn,
                (jobs.state == State.QUEUED) & jobs.cancel_requested.is_(True) & (jobs.attempts == 0),
                order_by=[jobs.id],
                limit=1000,
            )
            if found:
                await conn.execute(
                    tuning_jobs.update()
                    .where(jobs.id.in_([job.id for job in found]), jobs.state == State.QUEUED)
                    .values(state=State.CANCELLED, cancel_requested=False, finished_at=now, updated_at=now)
                )
                await self._append_events(
                    conn, [(job.id, Transition.CANCELLED, job.state, State.CANCELLED, {}) for job in found]
                )
        for job in found:
            self._announce(job, Transition.CANCELLED, State.CANCELLED, {})
        return found

    async def claim_cancellations(self, owner: str, *, limit: int, lease_seconds: float) -> list[Job]:
        """Take jobs to cancel: tuning ones with a request, queued ones whose earlier create may have landed
        (a lost answer), submissions whose submitter is gone, and cancellations whose canceller died."""
        now = self.clock()
        lease_until = now + timedelta(seconds=lease_seconds)
        lease = {"lease_owner": owner, "lease_expires_at": lease_until, "updated_at": now}
        expired = (jobs.lease_expires_at.is_(None)) | (jobs.lease_expires_at < now)
        async with self.engine.begin() as conn:
            found = await self._lock_rows(
                conn,
                (jobs.cancel_requested.is_(True) & (jobs.state == State.TUNING))
                | (jobs.cancel_requested.is_(True) & (jobs.state == State.QUEUED) & (jobs.attempts > 0))
                | (jobs.cancel_requested.is_(True) & (jobs.state == State.SUBMITTING) & expired)
                | ((jobs.state == State.CANCELLING) & expired),
                order_by=[jobs.id],
                limit=limit,
            )
            starting = [job for job in found if job.state != State.CANCELLING]
            if found:
                await conn.execute(tuning_jobs.update().where(jobs.id.in_([job.id for job in found])).values(**lease))
            if starting:
                await conn.execute(
                    tuning_jobs.update()
                    .where(jobs.id.in_([job.id for job in starting]))
                    .values(state=State.CANCELLING, next_poll_at=None)
                )
                await self._append_events(
                    conn,
                    [(job.id, Transition.CANCEL_STARTED, job.state, State.CANCELLING, {}) for job in starting],
                )
        for job in starting:
            self._announce(job, Transition.CANCEL_STARTED, State.CANCELLING, {})
        return [
            dataclasses.replace(job, state=State.CANCELLING, lease_owner=owner, lease_expires_at=lease_until)
            for job in found
        ]

    async def mark_cancelled(
        self,
        job: Job,
        *,
        model_deleted: bool,
        error: str | None = None,
        already_gone: bool = False,
        late_create_check: bool = False,
    ) -> bool:
        """`model_deleted`: no model of the job remains (purged_at is set); `already_gone`: there was nothing to
        delete; `late_create_check`: nothing remains now, but a create never answered may still land, so the
        purger looks again before setting purged_at. `error`: why what the job left could not be removed (the
        service refused), kept in last_error."""
        now = self.clock()
        # the request is carried out: clearing it keeps ignore_late_cancels from calling it ignored
        values: dict[str, Any] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "finished_at": now,
            "cancel_requested": False,
        }
        detail: dict[str, Any] = {"model_deleted": model_deleted}
        if model_deleted:
            values["purged_at"] = now
        if already_gone:
            detail["already_gone"] = True
        if late_create_check:
            detail["late_create_check"] = True
        if error is not None:
            values["last_error"] = detail["error"] = error
        return await self._move(job, Transition.CANCELLED, values, detail)

    async def ignore_late_cancels(self) -> list[Job]:
        """Cancel requests on finished jobs: clear them and say so in the job's timeline, once."""
        async with self.engine.begin() as conn:
            found = await self._lock_rows(
                conn,
                jobs.cancel_requested.is_(True) & jobs.state.in_([s.value for s in TERMINAL]),
                order_by=[jobs.id],
                limit=1000,
            )
            if found:
                await conn.execute(
                    tuning_jobs.update().where(jobs.id.in_([job.id for job in found])).values(cancel_requested=False)
                )
                await self._append_events(
                    conn, [(job.id, "cancel_ignored", None, None, {"state": job.state.value}) for job in found]
                )
        return found

    # ---- purging ----

    async def purge_candidates(self, rules: PurgeRules, *, limit: int) -> list[PurgeCandidate]:
        """Finished jobs whose model may be deleted, oldest finish first, each with the policy that matched.

        Only jobs for which a create may have been sent (attempts > 0) and whose model is not known gone
        (purged_at is null) qualify; jobs still tuning, and succeeded jobs within policy, never do."""
        now = self.clock()
        policies: dict[PurgePolicy, sa.ColumnElement[bool]] = {
            PurgePolicy.CANCELLED: (jobs.state == State.CANCELLED) & (jobs.finished_at <= now - rules.cancelled_after),
            PurgePolicy.FAILED: (jobs.state == State.FAILED) & (jobs.finished_at <= now - rules.failed_after),
            PurgePolicy.KEEP_UNTIL: (jobs.state == State.SUCCEEDED) & self._at_or_before(jobs.keep_until, now),
        }
        if rules.max_age is not None:
            policies[PurgePolicy.MAX_AGE] = (jobs.state == State.SUCCEEDED) & (jobs.finished_at <= now - rules.max_age)
        eligible = (jobs.attempts > 0) & jobs.purged_at.is_(None) & jobs.tuned_model_id.is_not(None)
        found: dict[int, PurgeCandidate] = {}
        async with self.engine.connect() as conn:
            for policy, where in policies.items():
                query = sa.select(*_CLAIMED_COLUMNS).where(eligible & where).order_by(jobs.finished_at).limit(limit)
                for row in (await conn.execute(query)).mappings():
                    try:
                        job = Job.from_row(row)
                    except UnreadableRow as exc:
                        # terminal rows are not the workers' to reject: this one keeps its model until it is fixed
                        log.warning("row_unreadable", job_id=exc.job_id, column=exc.column, worker="purger")
                        continue
                    found.setdefault(job.id, PurgeCandidate(job, policy))
        ordered = sorted(found.values(), key=lambda c: (c.job.finished_at or now, c.job.id))
        return ordered[:limit]

    async def mark_purged(self, candidate: PurgeCandidate, *, already_gone: bool = False) -> bool:
        """No model of the job remains: set purged_at and add a `purged` event. The state stays (it records what
        happened to the job). Only if the job is still as the purger saw it: in its state, not yet purged."""
        job = candidate.job
        detail: dict[str, Any] = {"policy": candidate.policy.value, "tuned_model": candidate.model_name}
        if already_gone:
            detail["already_gone"] = True
        now = self.clock()
        async with self.engine.begin() as conn:
            updated = await conn.execute(
                tuning_jobs.update()
                .where(
                    jobs.id == job.id,
                    jobs.state == job.state,
                    jobs.state.in_([state.value for state in MAY_LEAVE_A_MODEL]),
                    jobs.purged_at.is_(None),
                )
                .values(purged_at=now, updated_at=now)
            )
            if updated.rowcount != 1:
                return False
            await self._append_events(conn, [(job.id, "purged", None, None, detail)])
        return True

    async def record_purge_failure(self, job: Job, policy: PurgePolicy, error: str) -> bool:
        """The service refused to delete what a finished job left: keep the refusal in last_error and, when it is
        news (not what the last run met), add a `purge_delete_failed` event. True if it was news."""
        error = redact(error)  # before the comparison with what the row holds, which was redacted too
        detail = {"policy": policy.value, "error": error}
        async with self.engine.begin() as conn:
            updated = await conn.execute(
                tuning_jobs.update()
                .where(jobs.id == job.id, jobs.purged_at.is_(None), jobs.last_error.is_distinct_from(error))
                .values(last_error=error, updated_at=self.clock())
            )
            if updated.rowcount != 1:
                return False
            await self._append_events(conn, [(job.id, "purge_delete_failed", None, None, detail)])
        return True

    async def model_ids_with_jobs(self, model_ids: Iterable[str]) -> set[str]:
        wanted = list(model_ids)
        if not wanted:
            return set()
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(jobs.tuned_model_id).where(jobs.tuned_model_id.in_(wanted)))
            return {row[0] for row in rows}

    async def record_event(self, job_id: int | None, kind: str, detail: Mapping[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await self._append_events(conn, [(job_id, kind, None, None, dict(detail))])

    # ---- named leases (one purger at a time) ----

    async def take_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Hold the named lease for `seconds`, if it is free, expired or already ours."""
        now = self.clock()
        until = now + timedelta(seconds=seconds)
        async with self.engine.begin() as conn:
            updated = await conn.execute(
                leases.update()
                .where(
                    leases.c.name == name,
                    (leases.c.owner == owner) | leases.c.owner.is_(None) | (leases.c.expires_at < now),
                )
                .values(owner=owner, expires_at=until)
            )
            if updated.rowcount == 1:
                return True
            # Two replicas may both find no row: the second insert must lose quietly, not raise.
            insert = (postgresql.insert if self.is_postgres else sqlite.insert)(leases)
            inserted = await conn.execute(
                insert.values(name=name, owner=owner, expires_at=until)
                .on_conflict_do_nothing(index_elements=[leases.c.name])
                .returning(leases.c.name)
            )
            return inserted.first() is not None

    async def release_lease(self, name: str, owner: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                leases.update()
                .where(leases.c.name == name, leases.c.owner == owner)
                .values(owner=None, expires_at=None)
            )

    # ---- internals ----

    async def _take_dispatch_lock(self, conn: AsyncConnection) -> None:
        """Take the dispatch claim's advisory lock for this transaction, waiting at most DISPATCH_LOCK_WAIT.

        Another replica's claim holds it for milliseconds; one that holds it longer is frozen, and waiting for it
        would stop this replica's dispatching too (its session ends after database.idle_in_transaction_timeout,
        which frees the lock). The same bound holds for every lock the claim then waits for, so that a claim
        never keeps the dispatch lock while it waits on someone else: past it the transaction fails, which frees
        the lock even if this process is frozen. Either way the error is lock_not_available."""
        await conn.execute(sa.text(f"SET LOCAL lock_timeout = {int(DISPATCH_LOCK_WAIT * 1000)}"))
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_DISPATCH_LOCK_KEY)))

    async def _claim_due(self, where: sa.ColumnElement[bool], *, limit: int, lease_seconds: float) -> list[Job]:
        """Take jobs matching `where` whose next_poll_at has come, moving it a lease ahead; oldest due first."""
        now = self.clock()
        async with self.engine.begin() as conn:
            due = await self._lock_rows(
                conn, where & (jobs.next_poll_at <= now), order_by=[jobs.next_poll_at], limit=limit
            )
            if due:
                await conn.execute(
                    tuning_jobs.update()
                    .where(jobs.id.in_([job.id for job in due]))
                    .values(next_poll_at=now + timedelta(seconds=lease_seconds))
                )
        return due

    async def _lock_rows(
        self, conn: AsyncConnection, where: sa.ColumnElement[bool], *, order_by: list[Any], limit: int
    ) -> list[Job]:
        """The rows matching `where`, locked on PostgreSQL; their _LARGE_COLUMNS are left out (None)."""
        query = sa.select(*_CLAIMED_COLUMNS).where(where).order_by(*order_by).limit(limit)
        if self.is_postgres:
            query = query.with_for_update(skip_locked=True)
        found: list[Job] = []
        unreadable: list[tuple[int, State, UnreadableRow]] = []
        for row in (await conn.execute(query)).mappings():
            try:
                found.append(Job.from_row(row))
            except UnreadableRow as exc:
                unreadable.append((row["id"], State(row["state"]), exc))
        if unreadable:
            await self._set_aside(conn, unreadable)
        return found

    async def _set_aside(self, conn: AsyncConnection, rows: Sequence[tuple[int, State, UnreadableRow]]) -> None:
        """Take rows a claim found but cannot load out of every claim's way, in the claim's transaction: a
        job in the workers' hands becomes `invalid` with a fixed message naming the column; a finished one (an
        evaluation or a late cancel request) is left as it is, with nothing more due."""
        now = self.clock()
        updates: list[tuple[int, Mapping[str, Any]]] = []
        events: list[tuple[int | None, str, State | None, State | None, Mapping[str, Any]]] = []
        for job_id, state, row in rows:
            log.warning("row_unreadable", job_id=job_id, column=row.column, state=state.value)
            values: dict[str, Any] = {"next_poll_at": None, "updated_at": now}
            detail = {"error": row.message, "column": row.column}
            if state in sources(Transition.UNREADABLE):
                to = check(Transition.UNREADABLE, state)
                values |= {"state": to, "last_error": row.message, "finished_at": now}
                values |= {"lease_owner": None, "lease_expires_at": None, "cancel_requested": False}
                events.append((job_id, Transition.UNREADABLE, state, to, detail))
                if self.observer is not None:
                    self.observer.transition(Transition.UNREADABLE.value, state.value, to.value)
            else:
                values["cancel_requested"] = False
                events.append((job_id, "row_unreadable", None, None, detail))
            updates.append((job_id, values))
        await self._update_rows(conn, updates)
        await self._append_events(conn, events)

    async def names_eval_pairs(self, job: Job) -> bool:
        """Whether a job that succeeded is to be evaluated: its eval_data, read once, at that moment."""
        loaded = await self._with_large_columns([job], "eval_data")
        return bool(loaded and loaded[0].eval_data)

    async def _with_large_columns(self, claimed: list[Job], *names: str) -> list[Job]:
        """`claimed` with the large columns `names` read after the claim's commit. They are fetched as text and
        decoded once the transaction has ended (off the event loop when large): on SQLite every transaction of
        the daemon's holds the write lock, a read's included."""
        if not claimed:
            return claimed
        texts = [sa.cast(jobs[name], sa.Text).label(name) for name in names]
        query = sa.select(jobs.id, *texts).where(jobs.id.in_([job.id for job in claimed]))
        async with self.engine.connect() as conn:
            found = {row.id: [row._mapping[name] for name in names] for row in await conn.execute(query)}
        size = sum(len(text) for values in found.values() for text in values if isinstance(text, str))
        if size > _DECODE_INLINE_LIMIT:
            decoded = await asyncio.to_thread(_decode_json_texts, found)
        else:
            decoded = _decode_json_texts(found)
        loaded = [
            dataclasses.replace(job, **dict(zip(names, decoded[job.id], strict=True))) if job.id in decoded else job
            for job in claimed
        ]
        # The claim could not look at these columns: a job whose large column cannot be read is set aside now,
        # as the claim sets aside a row it cannot load, and is not handed out.
        unreadable = []
        for job in loaded:
            column = next((name for name in names if getattr(job, name) is UNREADABLE), None)
            if column is not None:
                unreadable.append((job.id, job.state, UnreadableRow(job.id, column)))
        if unreadable:
            async with self.engine.begin() as conn:
                await self._set_aside(conn, unreadable)
        set_aside = {job_id for job_id, _, _ in unreadable}
        return [job for job in loaded if job.id not in set_aside]

    async def _model_ids_taken_elsewhere(self, conn: AsyncConnection, model_ids: Mapping[int, str]) -> dict[int, int]:
        """Jobs among `model_ids` whose model id already belongs to another job -> that other job's id."""
        rows = await conn.execute(
            sa.select(jobs.id, jobs.tuned_model_id).where(jobs.tuned_model_id.in_(list(model_ids.values())))
        )
        owner_of = {model_id: job_id for job_id, model_id in rows}
        return {
            job_id: owner_of[model_id]
            for job_id, model_id in model_ids.items()
            if model_id in owner_of and owner_of[model_id] != job_id
        }

    async def _finish(self, job: Job, transition: Transition, error: str) -> bool:
        values = {"last_error": error, "finished_at": self.clock(), "lease_owner": None, "lease_expires_at": None}
        return await self._move(job, transition, values | {"next_poll_at": None}, {"error": error})

    async def _move(
        self, job: Job, transition: Transition, values: Mapping[str, Any], detail: Mapping[str, Any]
    ) -> bool:
        """Apply one transition to a job the caller has seen in `job.state` (and, if leased, holds)."""
        check(transition, job.state)  # an edge the state machine lacks is a bug here, not in the batch
        return await self._write_change(RowChange(job, transition, values, detail))

    async def _write_change(self, change: RowChange) -> bool:
        """Write one change with whatever else is being written; if someone else (a producer's open transaction)
        holds its row, keep trying it alone, so that it waits without holding up the other jobs' writes."""
        applied = await self._changes.submit(change)
        delay = _ROW_LOCKED_RETRY
        if applied is None:
            log.info("job_row_locked", job_id=change.job.id)
        while applied is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _ROW_LOCKED_MAX_RETRY)
            [applied] = await self._write_changes([change])
        return applied

    async def _write_changes(self, changes: Sequence[RowChange]) -> list[bool | None]:
        """Write a batch of row changes in one transaction; each applies only if its guard still holds.

        The rows are read (and on PostgreSQL locked, in id order) once, the guards checked here, in order, so
        that a second change to the same job sees the first; then one UPDATE per shape of values and one
        INSERT for the events. On PostgreSQL a row someone else holds locked is skipped, never waited for:
        its changes are neither applied nor refused (None), for the caller to try again."""
        now = self.clock()
        applied: list[bool | None] = []
        updates: list[tuple[int, dict[str, Any]]] = []
        events: list[tuple[int | None, str, State | None, State | None, Mapping[str, Any]]] = []
        async with self.engine.begin() as conn:
            query = sa.select(jobs.id, jobs.state, jobs.lease_owner).where(
                jobs.id.in_({change.job.id for change in changes})
            )
            if self.is_postgres:
                # FOR NO KEY UPDATE, the lock its UPDATEs take anyway: a row held FOR KEY SHARE is not passed over
                query = query.order_by(jobs.id).with_for_update(skip_locked=True, key_share=True)
            rows = {row.id: (State(row.state), row.lease_owner) for row in await conn.execute(query)}
            skipped: dict[int, State | None] = {}  # the state each skipped change found (None: no row)
            locked = await self._held_elsewhere(conn, {change.job.id for change in changes} - rows.keys())
            for change in changes:
                if change.job.id in locked:
                    applied.append(None)
                    continue
                found = rows.get(change.job.id)
                holds = found is not None and change.holds(*found)
                applied.append(holds)
                if found is None or not holds:
                    skipped[change.job.id] = found[0] if found is not None else None
                    continue
                to = change.to_state
                values = {"state": to, "updated_at": now, **change.values}
                rows[change.job.id] = (to, values.get("lease_owner", found[1]))
                updates.append((change.job.id, values))
                if change.transition is not None:
                    events.append((change.job.id, change.transition, change.job.state, to, change.detail or {}))
                elif change.detail is not None:
                    events.append((change.job.id, "progress", None, None, change.detail))
            await self._update_rows(conn, updates)
            await self._append_events(conn, events)
            # Rare: a state the handler did not expect. Was it written by a daemon, or by someone else?
            moved = [job_id for job_id, state in skipped.items() if state is not None]
            recorded = await self._latest_recorded_states(conn, moved)
        for change, outcome in zip(changes, applied, strict=True):
            if outcome is False:
                self._say_why_skipped(change, found=skipped.get(change.job.id), recorded=recorded)
            if change.transition is None or outcome is None:
                continue
            if outcome:
                self._announce(change.job, change.transition, change.to_state, change.detail or {})
            else:
                log.info(
                    "transition_skipped",
                    job_id=change.job.id,
                    transition=change.transition.value,
                    expected=change.job.state.value,
                )
        return applied

    @staticmethod
    def _say_why_skipped(change: RowChange, *, found: State | None, recorded: Mapping[int, str | None]) -> None:
        """Warn when a change was skipped because someone other than a daemon changed the row: a producer deleted
        it (whatever the job started on the service is the purger's now, as an orphan), or wrote its `state`
        (every state a daemon writes is the target of the job's latest transition event)."""
        expected = change.job.state if change.transition else State.TUNING
        if found is None:
            log.warning("job_row_gone", job_id=change.job.id, transition=_name(change), expected=expected.value)
        elif found != expected and recorded.get(change.job.id) != found.value:
            log.warning(
                "job_state_overwritten",
                job_id=change.job.id,
                transition=_name(change),
                expected=expected.value,
                found=found.value,
                recorded=recorded.get(change.job.id),
            )

    async def _latest_recorded_states(self, conn: AsyncConnection, job_ids: Sequence[int]) -> dict[int, str | None]:
        """The state each job's latest transition event led to: the state a daemon last wrote."""
        if not job_ids:
            return {}
        latest = (
            sa.select(sa.func.max(job_events.c.id))
            .where(job_events.c.job_id.in_(job_ids), job_events.c.to_state.is_not(None))
            .group_by(job_events.c.job_id)
        )
        query = sa.select(job_events.c.job_id, job_events.c.to_state).where(job_events.c.id.in_(latest))
        return {job_id: to_state for job_id, to_state in await conn.execute(query)}

    async def _held_elsewhere(self, conn: AsyncConnection, missing: set[int]) -> set[int]:
        """Which of the jobs a `SKIP LOCKED` read did not return exist: their rows are locked by someone else."""
        if not self.is_postgres or not missing:
            return set()
        return set((await conn.scalars(sa.select(jobs.id).where(jobs.id.in_(missing)))).all())

    async def _update_rows(self, conn: AsyncConnection, rows: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Set each job's values: one executemany UPDATE per set of columns, in order where a job repeats."""

        def columns(row: tuple[int, Mapping[str, Any]]) -> tuple[str, ...]:
            return tuple(sorted(row[1]))

        # Errors may quote what a service or a producer's data said: known secrets never reach the database.
        rows = [(job_id, _redacted_error(values)) for job_id, values in rows]
        if len({job_id for job_id, _ in rows}) == len(rows):  # no job twice: order is free, so group by shape
            rows = sorted(rows, key=columns)
        for shape, group in itertools.groupby(rows, key=columns):
            params = [
                {"_id": job_id, **{f"_{name}": value for name, value in values.items()}} for job_id, values in group
            ]
            await conn.execute(_update_by_id(shape), params)

    async def _append_events(
        self,
        conn: AsyncConnection,
        events: Sequence[tuple[int | None, str, State | None, State | None, Mapping[str, Any]]],
    ) -> None:
        now = self.clock()
        rows = [
            {
                "job_id": job_id,
                "at": now,
                "kind": str(kind),
                "from_state": from_state.value if from_state else None,
                "to_state": to_state.value if to_state else None,
                "detail": redact(dict(detail)),
            }
            for job_id, kind, from_state, to_state, detail in events
        ]
        if rows:
            await conn.execute(job_events.insert(), rows)

    def _announce(self, job: Job, transition: Transition, to: State, detail: Mapping[str, Any]) -> None:
        fields = {
            "job_id": job.id,
            "transition": transition.value,
            "from_state": job.state.value,
            "to_state": to.value,
            **{k: v for k, v in detail.items() if k not in ("job_id", "event")},
        }
        if to is State.FAILED:  # a failure is worth a warning: `journalctl -p warning` shows it
            log.warning("job_state_changed", **fields)
        else:
            log.info("job_state_changed", **fields)
        if self.observer is not None:
            self.observer.transition(transition.value, job.state.value, to.value)

    def _at_or_before(self, column: sa.ColumnElement[Any], moment: datetime) -> sa.ColumnElement[bool]:
        # A producer may write keep_until as any ISO 8601 text on SQLite ('T', offsets): compare as instants.
        if self.is_postgres:
            return column <= moment
        stamp = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
        return sa.func.julianday(column) <= sa.func.julianday(stamp)


def _name(change: RowChange) -> str:
    """What a row change was doing, for a log line: its transition, or a poll's record of progress."""
    return change.transition.value if change.transition is not None else "progress"


def _redacted_error(values: Mapping[str, Any]) -> Mapping[str, Any]:
    if values.get("last_error") is None:
        return values
    return {**values, "last_error": redact(values["last_error"])}


@functools.lru_cache(maxsize=64)
def _update_by_id(columns: tuple[str, ...]) -> sa.Update:
    """`UPDATE tuning_jobs SET <columns> WHERE id = :_id`, built once per set of columns and executed with many
    parameter sets (the bound names carry a prefix: SQLAlchemy reserves the bare column names)."""
    return (
        tuning_jobs.update()
        .where(jobs.id == sa.bindparam("_id"))
        .values({name: sa.bindparam(f"_{name}", type_=jobs[name].type) for name in columns})
    )
