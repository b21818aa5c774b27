"""Canceller: carries out `cancel_requested`.

A queued job that was never sent is cancelled on the spot. Any other (a submitting or tuning job, or a queued
one waiting to retry, whose earlier create may have landed) moves to `cancelling`: its remote work is cancelled
and, unless cancelled models are kept for a while (`purge.cancelled_after`), what it left removed, since the
quality of a half-tuned model is unpredictable. Then the job is `cancelled`. The `cancelling` state is leased,
so a canceller that dies leaves work that another (or the restarted daemon) finishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tunekeeper.backends.googleapi.errors import NotFound, PermanentError, TransientError
from tunekeeper.backends.port import RemoteRef
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.worker import JobWorker
from tunekeeper.db.records import Job
from tunekeeper.db.store import create_unconfirmed


class Canceller(JobWorker):
    name = "canceller"

    @property
    def concurrency(self) -> int:
        return self.context.settings.tuning.max_concurrent_creates

    def __init__(self, context: DaemonContext) -> None:
        super().__init__(context)
        self._work_pending = True  # until a claim finds out

    async def claim(self, limit: int) -> Sequence[Job]:
        store = self.context.store
        # Nudged after every create, the canceller would otherwise run three claim transactions for nothing.
        self._work_pending = await store.cancel_work_pending()
        if not self._work_pending:
            return []
        await store.cancel_queued()
        for job in await store.ignore_late_cancels():
            self.log.info("cancel_ignored", job_id=job.id, state=job.state.value)
        return await store.claim_cancellations(
            self.context.owner, limit=limit, lease_seconds=self.context.settings.daemon.lease_seconds
        )

    async def next_due(self) -> datetime | None:
        return await self.context.store.next_cancel_due() if self._work_pending else None

    async def handle(self, job: Job) -> None:
        if job.attempts == 0:  # no start was ever sent
            await self.context.store.mark_cancelled(job, model_deleted=False)
            return
        remote = self.context.remote(job)
        delete = self.context.settings.purge.cancelled_after.total_seconds() == 0
        removal: _Removal | None = None
        try:
            with self.leases.holding(job):
                await self.context.backend.cancel(remote)
                if delete:
                    removal = await self._remove(remote)
        except (TransientError, PermanentError) as exc:
            # Left in `cancelling`: when the lease runs out, the next pass tries again.
            self.log.warning("cancel_failed", job_id=job.id, tuned_model=job.tuned_model_name, error=str(exc))
            return
        gone = removal is not None and removal.refused is None
        # A create sent for the job but never answered may still land (a connection that dropped, a submitter
        # frozen past its lease): then nothing found now is not final, and the purger looks again for a while
        # (purge.late_create_window) before recording that no model remains.
        unconfirmed = create_unconfirmed(job)
        await self.context.store.mark_cancelled(
            job,
            model_deleted=gone and not unconfirmed,
            error=removal.refused if removal is not None else None,
            already_gone=gone and removal is not None and removal.already_gone,
            late_create_check=gone and unconfirmed,
        )

    async def _remove(self, remote: RemoteRef) -> _Removal:
        """Remove what the cancelled work left: whether anything was there, and the service's refusal, if it refused.

        The work has ended by now, so a refusal is no reason to keep the job in `cancelling`, where it would hold
        a tuning slot and be tried again at every lease's end: the job is cancelled with the refusal recorded,
        and its leftovers are the purger's (the cancelled policy), which tries once per run."""
        try:
            await self.context.backend.remove(remote)
        except NotFound:
            self.log.info("model_already_gone", job_id=remote.owner.job_id, tuned_model=remote.model)
            return _Removal(already_gone=True)
        except PermanentError as exc:
            self.log.warning("remove_refused", job_id=remote.owner.job_id, tuned_model=remote.model, error=str(exc))
            return _Removal(refused=str(exc))
        return _Removal()


@dataclass(frozen=True, slots=True)
class _Removal:
    already_gone: bool = False  # nothing of the job's was there
    refused: str | None = None  # the service's refusal
