"""Canceller: carries out `cancel_requested`.

A queued job that was never sent is cancelled on the spot. Any other (a submitting or tuning job, or a queued
one waiting to retry, whose earlier create may have landed) moves to `cancelling`: its operation is cancelled
and, unless cancelled models are kept for a while (`purge.cancelled_after`), its model deleted, since the
quality of a half-tuned model is unpredictable. Then the job is `cancelled`. The `cancelling` state is leased,
so a canceller that dies leaves work that another (or the restarted daemon) finishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from tunekeeper.backends.googleapi.errors import InvalidArgument, NotFound, PermanentError, TransientError
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.worker import JobWorker
from tunekeeper.db.records import Job


class Canceller(JobWorker):
    name = "canceller"

    @property
    def concurrency(self) -> int:
        return self.context.settings.gemini.max_concurrent_creates

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
        model_name = job.tuned_model_name or (f"tunedModels/{job.tuned_model_id}" if job.tuned_model_id else None)
        if job.attempts == 0 or model_name is None:  # no create was ever sent
            await self.context.store.mark_cancelled(job, model_deleted=False)
            return
        delete = self.context.settings.purge.cancelled_after.total_seconds() == 0
        try:
            with self.leases.holding(job):
                await self._cancel_operations(job, model_name)
                if delete:
                    await self._delete(model_name)
        except (TransientError, PermanentError) as exc:
            # Left in `cancelling`: when the lease runs out, the next pass tries again.
            self.log.warning("cancel_failed", job_id=job.id, tuned_model=model_name, error=str(exc))
            return
        await self.context.store.mark_cancelled(job, model_deleted=delete)

    async def _cancel_operations(self, job: Job, model_name: str) -> None:
        backend = self.context.backend
        if job.operation_name:
            names = [job.operation_name]
        else:  # the submitter vanished mid-create: find what it may have started
            try:
                names = [op.name for op in await backend.find_operations(model_name) if not op.done]
            except NotFound:
                return
        for name in names:
            try:
                await backend.cancel_operation(name)
            except (NotFound, InvalidArgument) as exc:  # gone, or already finished: nothing left to stop
                self.log.info("operation_not_cancelled", job_id=job.id, operation=name, reason=str(exc))

    async def _delete(self, model_name: str) -> None:
        try:
            await self.context.backend.delete_tuned_model(model_name)
        except NotFound:
            self.log.info("model_already_gone", tuned_model=model_name)
