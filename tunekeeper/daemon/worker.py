"""The loop every job worker runs: claim what fits, handle each job concurrently, wait for more.

A worker claims at most as many jobs as it has free slots, so nothing it claims waits inside the process
while another replica could have taken it. It wakes up when nudged (a NOTIFY from PostgreSQL, a finished job
freeing a slot, shutdown), when its next job falls due, or after `idle_interval` at the latest.

One worker's failure to reach the database is logged and retried with back-off; so is any other failure of
its claim (a bug, or a row no claim can make sense of), with its traceback. A handler that raises is logged
with its traceback and its job, still leased, is picked up again when the lease runs out. A handler whose
outcome the database refuses to store (a value it cannot take) fails its job. None of these stops the daemon;
a worker whose claims keep failing shows in readiness (`failing`) and in a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import ClassVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError, StatementError

from tunekeeper.daemon.context import DaemonContext
from tunekeeper.db.records import Job
from tunekeeper.logs import first_line, get_logger
from tunekeeper.states import State

# A job that was due but not claimed (another replica holds its row for a moment) is looked at again this soon,
# rather than at once, so that a worker never spins on it.
BUSY_ROW_RETRY = 0.05
# What a lost or restarting database looks like from here.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, TimeoutError)
# Claims failing this many times in a row make the daemon not ready: something is wrong that waiting won't fix.
FAILING_AFTER = 5
MAX_BACKOFF = 30.0


def is_data_error(error: BaseException) -> bool:
    """Whether the database (or its driver) refused the values written, as opposed to being unreachable: writing
    them again can only fail again. What is left of SQLAlchemy's errors once a lost connection is ruled out, a
    value a bind processor refused (StatementError), and SQLite's driver refusing an integer (OverflowError)."""
    if isinstance(error, OverflowError):
        return True
    if isinstance(error, DBAPIError):
        lost = isinstance(error, OperationalError | InterfaceError) or error.connection_invalidated
        return not lost
    return type(error) is StatementError


UNSTORABLE = "the database refused a value the service returned for this job (see job_data_error in the log)"


class JobWorker(ABC):
    name: ClassVar[str]
    # Whether any handled job may have left work for the workers this one feeds. A worker whose jobs mostly do
    # not (most polls find the job still tuning) sets this False and calls `nudge_downstream` when one does.
    nudges_downstream_after_each_job: ClassVar[bool] = True

    def __init__(self, context: DaemonContext) -> None:
        self.context = context
        self.log = get_logger(f"tunekeeper.daemon.{self.name}")
        self._nudged = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._downstream: list[JobWorker] = []
        self.leases = LeaseKeeper(context)  # for handlers whose jobs hold a lease while they work (`holding`)
        self.failures = 0  # claims failed in a row

    @property
    @abstractmethod
    def concurrency(self) -> int:
        """How many jobs this worker handles at once (read afresh, so a reload takes effect)."""

    @abstractmethod
    async def claim(self, limit: int) -> Sequence[Job]:
        """Take up to `limit` jobs that are due for this worker."""

    @abstractmethod
    async def handle(self, job: Job) -> None:
        """Do this worker's part for one claimed job, recording the outcome in the store."""

    async def next_due(self) -> datetime | None:
        """When the next job becomes due, if the worker can tell; None means 'check again when idle'."""
        return None

    async def held_back(self) -> float | None:
        """Seconds to wait before the next claim while the worker may not take work (the service is failing);
        None: claim now. Never held back by default; it must not raise."""
        return None

    async def after_claim(self, claimed: int, limit: int) -> None:
        """Follow-up work on a claim of `claimed` jobs out of `limit`, run once they are under way (so it never
        delays them); it must not raise. None by default."""
        return None

    def nudge(self) -> None:
        """Look for work now (new jobs were announced, or the daemon is stopping)."""
        self._nudged.set()

    def feeds(self, worker: JobWorker) -> None:
        """`worker` may have new work when this one finishes a job: nudge it then, rather than let it idle."""
        self._downstream.append(worker)

    def nudge_downstream(self) -> None:
        """Tell the workers this one feeds that a job it handled has left them work."""
        for worker in self._downstream:
            worker.nudge()

    @property
    def busy(self) -> int:
        return len(self._in_flight)

    @property
    def failing(self) -> bool:
        """Whether this worker's claims have kept failing (readiness says so)."""
        return self.failures >= FAILING_AFTER

    async def fail_unstorable(self, job: Job, error: str) -> None:
        """The database refused to store this job's outcome (a value it cannot take): that is the job's failure,
        recorded with a fixed message the database does take, so it is not tried again for ever."""
        store = self.context.store
        if job.state is State.SUBMITTING:
            await store.mark_submit_failed(job, error=error)
        elif job.state is State.TUNING:
            await store.mark_tuning_failed(job, error=error)
        elif job.state is State.CANCELLING:
            await store.mark_cancelled(job, model_deleted=False, error=error)
        elif job.state is State.SUCCEEDED:  # an evaluation
            await store.record_eval(job, results=None, score=None, error=error)

    async def run(self, stopping: asyncio.Event, grace: float) -> None:
        """Loop until `stopping` is set, then give in-flight jobs `grace` seconds to finish."""
        async with asyncio.TaskGroup() as group:
            renewals = group.create_task(self.leases.run(), name=f"{self.name}-leases")
            try:
                while not stopping.is_set():
                    free = self.concurrency - len(self._in_flight)
                    if free <= 0:
                        await self._wait(None)
                        continue
                    held = await self.held_back()
                    if held is not None:
                        await self._wait(held)
                        continue
                    try:
                        claimed = await self.claim(free)
                        wait = await self._wait_after_claim(short=len(claimed) < free)
                        self.failures = 0
                    except Exception as exc:
                        # nothing a claim meets may end the loop: log it, back off, and try again
                        self.failures += 1
                        self.context.metrics.claim_failed(self.name)
                        # never longer than the idle safety net: a worker looks at least that often anyway
                        idle = self.context.settings.daemon.idle_interval
                        wait = min(MAX_BACKOFF, idle, 0.25 * 2**self.failures)
                        if isinstance(exc, DATABASE_ERRORS) and not is_data_error(exc):
                            self.log.warning(
                                "database_unavailable", worker=self.name, error=first_line(exc), retry_in=wait
                            )
                        else:
                            self.log.exception("claim_failed", worker=self.name, failures=self.failures, retry_in=wait)
                        claimed = []
                    for job in claimed:
                        self._start(group, job)
                    try:
                        await self.after_claim(len(claimed), free)
                    except Exception:  # it must not raise; if it does, the loop goes on all the same
                        self.log.exception("claim_failed", worker=self.name, failures=self.failures, retry_in=wait)
                    if wait > 0:
                        await self._wait(wait)
            finally:
                await self._drain(grace)
                renewals.cancel()

    def _start(self, group: asyncio.TaskGroup, job: Job) -> None:
        task = group.create_task(self._handle_safely(job), name=f"{self.name}-job-{job.id}")
        self._in_flight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._nudged.set()
        if self.nudges_downstream_after_each_job:
            self.nudge_downstream()

    async def _handle_safely(self, job: Job) -> None:
        try:
            await self.handle(job)
        except Exception as exc:
            if is_data_error(exc):
                # Storing the outcome again would only fail again (and call the service again): the job fails.
                self.log.error("job_data_error", worker=self.name, job_id=job.id, error=first_line(exc))
                try:
                    await self.fail_unstorable(job, UNSTORABLE)
                except Exception:
                    self.log.exception("job_handler_failed", worker=self.name, job_id=job.id)
            elif isinstance(exc, DATABASE_ERRORS):
                # The outcome was not recorded; the job's lease or due time brings it back.
                self.log.warning("database_unavailable", worker=self.name, job_id=job.id, error=first_line(exc))
            else:
                self.log.exception("job_handler_failed", worker=self.name, job_id=job.id)

    async def _wait_after_claim(self, *, short: bool) -> float:
        """Seconds to wait before the next claim: none after a full one (more may be due), nor when a nudge came
        during the claim (what it announced may have missed the claim: look again at once, without asking when
        the next job falls due); else until the next job falls due."""
        if not short:
            return 0.0
        if self._nudged.is_set():
            self._nudged.clear()
            return 0.0
        return await self._idle_delay()

    async def _idle_delay(self) -> float:
        idle = self.context.settings.daemon.idle_interval
        due = await self.next_due()
        if due is None:
            return idle
        return min(idle, max(BUSY_ROW_RETRY, (due - self.context.store.clock()).total_seconds()))

    async def _wait(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._nudged.wait()
        self._nudged.clear()

    async def _drain(self, grace: float) -> None:
        if not self._in_flight:
            return
        self.log.info("draining", worker=self.name, in_flight=len(self._in_flight), grace=grace)
        _, pending = await asyncio.wait(set(self._in_flight), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            self.log.warning("drain_timed_out", worker=self.name, cancelled=len(pending))


class LeaseKeeper:
    """Renews the leases of the jobs a worker has in hand, so that a slow call is not mistaken for a dead
    replica's: all of them in one statement every lease_seconds / 3, from one task, and none while none is held.

    A job's first renewal comes within a third of the lease after it is taken in hand, as its claim set the lease
    a whole lease ahead; each later one, a third of a lease after the one before.
    """

    def __init__(
        self, context: DaemonContext, renew: Callable[[Sequence[int], float], Awaitable[None]] | None = None
    ) -> None:
        self.context = context
        # How a renewal is written: by default the submitting and cancelling jobs' `lease_expires_at`.
        self._renew = renew or (lambda job_ids, seconds: context.store.renew_leases(context.owner, job_ids, seconds))
        self._held: set[int] = set()
        self._taken = asyncio.Event()  # set when a job is taken into an empty hand
        self.log = get_logger(__name__)

    @contextlib.contextmanager
    def holding(self, job: Job) -> Iterator[None]:
        """Keep `job`'s lease renewed while the block runs."""
        if not self._held:
            self._taken.set()
        self._held.add(job.id)
        try:
            yield
        finally:
            self._held.discard(job.id)

    async def run(self) -> None:
        """Renew until cancelled."""
        while True:
            if not self._held:
                self._taken.clear()
                await self._taken.wait()
            seconds = self.context.settings.daemon.lease_seconds
            await asyncio.sleep(seconds / 3)
            held = sorted(self._held)
            if not held:
                continue
            try:
                await self._renew(held, seconds)
            except Exception as exc:  # this task ending would end its worker: log, and renew again next time
                self.log.warning("lease_renewal_failed", jobs=len(held), error=first_line(exc))
