"""Dispatcher: queued jobs -> validated -> created on the service, within the quota and the create rate.

Submission is idempotent by ownership (backends/port.py): every start carries the job's mark, so a start that
is retried (by the client, after a restart, or by another replica taking over an expired lease) finds and
adopts the work an earlier attempt began, and refuses work under the job's name that is not provably its own.

A claim that comes back short stopped because the queue ran dry or because the tuning quota is full: if
queued jobs remain, they wait for a slot. The dispatcher then tells the pollers it feeds, so that they poll
the jobs holding the slots more closely near their finish. Finding out costs one indexed read after a short
claim that took jobs (the slots may just have filled, or the queue drained), and otherwise at most one per
CONTENTION_RECHECK_S (jobs queued while the slots are full, another replica draining the queue).

While the service fails as a whole, the dispatch breaker (breaker.py) pauses claiming, so that queued jobs
keep their attempts: after `daemon.breaker_failures` creates in a row fail for the service's sake, and at once
when the service refuses the key (a 401/403 that a cheap read with the same key confirms; a refusal the read
does not confirm is the job's own, and fails it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from aiolimiter import AsyncLimiter

from tunekeeper.backends.googleapi.errors import (
    NotFound,
    PermanentError,
    PermissionDenied,
    ServiceError,
    TransientError,
)
from tunekeeper.backends.googleapi.retry import RetryPolicy, backoff_delay
from tunekeeper.backends.port import InvalidRequest, RemoteRef, Started, TuningRequest
from tunekeeper.daemon.breaker import PauseReason
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.intake import check_job
from tunekeeper.daemon.poller import Poller, first_poll_delay
from tunekeeper.daemon.worker import DATABASE_ERRORS, JobWorker
from tunekeeper.datasets import DataRoots, DatasetError, check_eval_limits
from tunekeeper.db.records import Job
from tunekeeper.states import State

# After a short claim that took no job, whether queued jobs wait for a slot is looked at again this often at most.
CONTENTION_RECHECK_S = 1.0
# Inline training data and eval pairs up to this size (examples in a list, or characters of JSON text) are checked
# on the event loop, in well under a millisecond; larger data, and any training file, in a thread.
INLINE_CHECK_LIMIT = 1000


def _small_inline_data(job: Job) -> bool:
    data, pairs = job.training_data, job.eval_data
    small_eval = pairs is None or (isinstance(pairs, list | str) and len(pairs) <= INLINE_CHECK_LIMIT)
    return job.training_file is None and isinstance(data, list | str) and len(data) <= INLINE_CHECK_LIMIT and small_eval


class Dispatcher(JobWorker):
    name = "dispatcher"

    def __init__(self, context: DaemonContext, *, rng: random.Random | None = None) -> None:
        super().__init__(context)
        self._rng = rng or random.Random()
        self._rate = context.settings.tuning.creates_per_minute
        self._limiter = AsyncLimiter(self._rate, 60.0)
        self._pollers: list[Poller] = []
        self._contention_checked = -CONTENTION_RECHECK_S  # time.monotonic() of the last check
        self._claimed_at: dict[int, float] = {}  # job id -> time.monotonic() just before the claim that took it
        self._probe: int | None = None  # the job sent as the breaker's probe, while it is in flight
        self._key_check = asyncio.Lock()  # one check of the key at a time, however many creates were refused

    @property
    def concurrency(self) -> int:
        return self.context.settings.tuning.max_concurrent_creates

    def feeds(self, worker: JobWorker) -> None:
        super().feeds(worker)
        if isinstance(worker, Poller):
            self._pollers.append(worker)  # told whether the quota holds queued jobs back

    async def held_back(self) -> float | None:
        breaker = self.context.breaker
        wait = breaker.hold()
        if wait is not None or not breaker.paused_for(PauseReason.CREDENTIALS):
            return wait  # closed, paused, or an outage's probe is due: the next claim takes it
        breaker.probing(True)  # the key's check is the probe: no job is sent for it
        refusal = await self._check_key()
        if refusal is None:
            breaker.answered()
            return None
        breaker.credentials_refused(refusal)
        return breaker.hold()

    async def claim(self, limit: int) -> Sequence[Job]:
        settings = self.context.settings
        breaker = self.context.breaker
        # Read before the claim computes the lease's start, so that the time since it is never underestimated.
        asked = time.monotonic()
        claimed = await self.context.store.claim_for_submission(
            self.context.owner,
            limit=breaker.room(limit),
            max_active=settings.tuning.max_active_jobs,
            lease_seconds=settings.daemon.lease_seconds,
            model_id_prefix=settings.gemini.model_id_prefix,
        )
        for job in claimed:
            self._claimed_at[job.id] = asked
        if claimed and breaker.probe_due():  # half-open: the one job claimed is the probe
            breaker.probing(True)
            self._probe = claimed[0].id
        return claimed

    async def after_claim(self, claimed: int, limit: int) -> None:
        if claimed < limit and self._pollers:  # the queue ran dry, or the quota is full
            await self._check_contention(took_jobs=claimed > 0)

    async def handle(self, job: Job) -> None:
        try:
            await self._submit(job)
        finally:
            if self._probe == job.id:  # whatever became of it, this probe is over (a new one may follow)
                self._probe = None
                self.context.breaker.probing(False)

    async def _submit(self, job: Job) -> None:
        store = self.context.store
        claimed_at = self._claimed_at.pop(job.id, None)
        breaker = self.context.breaker
        max_attempts = self.context.settings.daemon.max_attempts
        if job.attempts > max_attempts:  # taken over after its submitter's lease ran out, once too often
            message = f"gave up after {max_attempts} attempts: the submitter's lease ran out each time"
            await store.mark_submit_failed(job, error=message)
            return
        # The lease is renewed from the claim on: reading a large file may take longer than a lease.
        with self.leases.holding(job):
            try:
                if _small_inline_data(job):  # checked at once: a hop to a thread would cost more than the check
                    request = self._build_request(job)
                else:  # a file to read, or much to check: off the event loop
                    request = await asyncio.to_thread(self._build_request, job)
            except (DatasetError, InvalidRequest) as exc:
                await store.mark_invalid(job, error=str(exc))
                return
            try:
                started = await self._start_tuning(job, request, claimed_at)
                if started is None:  # fenced: the job is no longer this submitter's
                    return
            except InvalidRequest as exc:  # found out at the service, e.g. a training file it does not hold
                breaker.answered()
                await store.mark_invalid(job, error=str(exc))
                return
            except PermissionDenied as exc:
                await self._refused(job, exc)
                return
            except TransientError as exc:
                await self._retry_later(job, exc)
                return
            except PermanentError as exc:
                breaker.answered()
                await store.mark_submit_failed(job, error=str(exc))
                return
        breaker.answered()
        if not await self._accept(job, started):
            await self._undo_late_create(job, started)

    async def _accept(self, job: Job, started: Started) -> bool:
        """Record the service's answer; False if the job moved on while the create was in flight."""
        store = self.context.store
        backend = self.context.backend.kind
        if started.handle is None:  # adopted work whose handle the service no longer lists: poll by the model
            return await store.mark_accepted(
                job,
                operation_name=None,
                tuned_model_name=started.model,
                total_steps=None,
                adopted=started.adopted,
                backend=backend,
                training_uri=started.training_uri,
            )
        now = store.clock()
        total_steps = started.total_steps or 0
        first_poll = first_poll_delay(self.context.settings, now, total_steps, self._rng)
        return await store.mark_accepted(
            job,
            operation_name=started.handle,
            tuned_model_name=started.model,
            total_steps=started.total_steps,
            adopted=started.adopted,
            backend=backend,
            training_uri=started.training_uri,
            first_poll_at=now + timedelta(seconds=first_poll),
        )

    async def next_due(self) -> datetime | None:
        return await self.context.store.next_submission_due()

    async def _check_contention(self, *, took_jobs: bool) -> None:
        """After a short claim: tell the pollers whether queued jobs are left, waiting for a slot."""
        now = time.monotonic()
        if not took_jobs and now - self._contention_checked < CONTENTION_RECHECK_S:
            return
        self._contention_checked = now
        # A failure to find out keeps the last answer (and must not escape: the worker loop does not expect it).
        with contextlib.suppress(*DATABASE_ERRORS):
            waiting = await self.context.store.submission_waiting()
            for poller in self._pollers:
                poller.slots_contended = waiting

    def _build_request(self, job: Job) -> TuningRequest:
        """Check the job's request and evaluation pairs and load its examples (reading a file, if it names one,
        only from below a configured data root)."""
        settings = self.context.settings
        checked = check_job(
            job,
            settings=settings,
            rules=self.context.backend,
            owner=self.context.owner_of(job),
            chosen_name=job.tuned_model_id,  # fixed by the claim
            files=DataRoots(settings.data.roots).open,
        )
        # An evaluation beyond the [eval] limits would spend the shared key's quota: the job is invalid now.
        limits = settings.eval
        check_eval_limits(checked.eval_pairs, max_pairs=limits.max_pairs, max_input_chars=limits.max_input_chars)
        return checked.request

    async def _start_tuning(self, job: Job, request: TuningRequest, claimed_at: float | None) -> Started | None:
        """Start the tuning within the create rate, or adopt what an earlier attempt of this job started; None,
        with nothing sent, if the job is no longer this submitter's by the time its turn comes."""
        self._follow_rate_setting()
        async with self._limiter, self.context.budget.limiter():
            # The fence: a submitter frozen or stalled past its lease may have lost the job (to another replica,
            # a cancel, a purge); a create sent then would start work nobody follows. Within half a lease of
            # the claim (by this process's monotonic clock, which runs on while it is frozen) the lease cannot
            # have run out, so the database is asked only when the create comes later than that.
            lease = self.context.settings.daemon.lease_seconds
            if claimed_at is None or time.monotonic() - claimed_at > lease / 2:
                lost = await self.context.store.submission_lost(job, self.context.owner)
                if lost is not None:
                    self.log.warning("create_fenced", job_id=job.id, reason=lost)
                    return None
            return await self.context.backend.start(request)

    async def _undo_late_create(self, job: Job, started: Started) -> None:
        """The job moved on while its create was in flight (the submitter was frozen past its lease, or the answer
        came late): what the create started is removed, unless the job still follows it or will take it up.

        Kept when the row names the same work (another replica adopted it), or the job is queued or submitting
        again (its next attempt adopts it: the same model id, or the job's labels). When the row follows other
        work of the job (a second tuning job on Vertex AI), this one is only cancelled: removing it would also
        remove what that work shares with it (the staged training file). Otherwise (cancelled, failed, the row
        deleted) it is cancelled and removed."""
        now = await self.context.store.get_job(job.id)
        if now is not None and (
            now.state in (State.QUEUED, State.SUBMITTING)
            or (started.handle is not None and now.operation_name == started.handle)
            or (started.model is not None and now.tuned_model_name == started.model)
        ):
            return
        following_other_work = now is not None and now.state in (State.TUNING, State.SUCCEEDED)
        remote = RemoteRef(self.context.owner_of(job), started.handle, started.model, job.tuned_model_id)
        try:
            await self.context.backend.cancel(remote)
            if not following_other_work:
                await self.context.backend.remove(remote)
        except NotFound:
            pass  # gone already: nothing left to undo
        except (TransientError, PermanentError) as exc:
            # The purger's late-create check (or, for a deleted row, its orphan search) tries again.
            self.log.warning("late_create_undo_failed", job_id=job.id, operation=started.handle, error=str(exc))
            return
        self.log.warning(
            "late_create_undone",
            job_id=job.id,
            state=now.state.value if now is not None else None,
            operation=started.handle,
            tuned_model=started.model,
            removed=not following_other_work,
        )

    async def _refused(self, job: Job, error: PermissionDenied) -> None:
        """A 401/403: the key's problem (dispatching pauses, the job goes back to the queue without spending an
        attempt) or, when a read with the same key is allowed, this job's own (it fails)."""
        breaker = self.context.breaker
        async with self._key_check:
            if not breaker.paused_for(PauseReason.CREDENTIALS):
                refusal = await self._check_key()
                if refusal is None:
                    breaker.answered()
                    await self.context.store.mark_submit_failed(job, error=str(error))
                    return
                breaker.credentials_refused(error)
        store = self.context.store
        await store.schedule_retry(job, error=str(error), retry_at=store.clock(), refund=True)

    async def _check_key(self) -> ServiceError | None:
        """None if the service takes the key for a cheap read; else what it answered (a refusal, or no answer:
        then the key cannot be shown good either)."""
        try:
            async with self.context.budget.limiter():
                await self.context.backend.check_access()
        except ServiceError as exc:
            return exc
        return None

    async def _retry_later(self, job: Job, error: TransientError) -> None:
        settings = self.context.settings.daemon
        # A 429 is the service saying "not now" (its tuning quota is full, or we ask too often): nothing was
        # started, and the job waits its turn with back-off, however long, without using up its attempts. Nor
        # does a failure that shows the whole service failing (it opened the breaker, or came while it was open).
        refused = error.http_status == 429 or self.context.breaker.service_failed(error)
        if not refused and job.attempts >= settings.max_attempts:
            message = f"gave up after {job.attempts} attempts: {error}"
            await self.context.store.mark_submit_failed(job, error=message)
            return
        policy = RetryPolicy(
            max_retries=settings.max_attempts, base_delay=settings.retry_base_delay, max_delay=settings.retry_max_delay
        )
        delay = backoff_delay(job.attempts, policy, self._rng, hint=error.retry_delay)
        retry_at = self.context.store.clock() + timedelta(seconds=delay)
        await self.context.store.schedule_retry(job, error=str(error), retry_at=retry_at, refund=refused)

    def _follow_rate_setting(self) -> None:
        rate = self.context.settings.tuning.creates_per_minute
        if rate != self._rate:  # changed by a reload
            self._rate = rate
            self._limiter = AsyncLimiter(rate, 60.0)
