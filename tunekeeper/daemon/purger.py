"""Purger: deletes tuned models that are no longer wanted, on a schedule (APScheduler) or on demand.

A purge never changes a job's state (it records what happened to the job); it sets `purged_at`, which means that
nothing of the job's remains on the service. A job whose create was sent but never answered may still get a
model after it ended (the create lands late): finding nothing for it is final only after
`purge.late_create_window`; until then each run looks again.

Policies (see PurgePolicy): models of cancelled jobs after `purge.cancelled_after`, of failed jobs after
`purge.failed_after`, of succeeded jobs past their `keep_until` or older than `purge.max_age`, and orphans:
models on the service that carry this deployment's mark (backends/port.py) but whose job has no row any more
(a producer deleted it). The mark makes that safe: another deployment's models, or anyone else's, never look
like orphans. Each run deletes at most
`purge.max_deletes_per_run`; a dry run only says what would go. One replica purges at a time: the run holds the
`purger` lease in the database, which expires on its own if its holder dies.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from tunekeeper.backends.googleapi.errors import NotFound, ServiceError
from tunekeeper.backends.port import RemoteRef
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.worker import DATABASE_ERRORS
from tunekeeper.db.store import PurgeCandidate, PurgePolicy, PurgeRules
from tunekeeper.logs import first_line, get_logger

LEASE_NAME = "purger"
SCHEDULE_ID = "purge"
log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeOutcome:
    policy: PurgePolicy
    tuned_model: str
    job_id: int | None
    deleted: bool  # True when this run deleted what the job left; False on a dry run, a failure, or nothing there
    error: str | None = None  # why it could not be removed (the service refused, or the row names no valid model)
    already_gone: bool = False  # nothing of the job's was there (a 404): recorded as purged all the same
    # Nothing there yet, but a create sent for the job was never answered and may still land: the job is looked
    # at again by each run until then (purge.late_create_window after it finished), and only then purged.
    recheck_until: datetime | None = None


class Purger:
    def __init__(self, context: DaemonContext) -> None:
        self.context = context
        self._scheduled: asyncio.Task[object] | None = None  # the scheduled run in flight, if any

    async def run_once(self, *, dry_run: bool | None = None) -> list[PurgeOutcome] | None:
        """One purge pass; None when another replica holds the purge lease."""
        settings = self.context.settings.purge
        dry_run = settings.dry_run if dry_run is None else dry_run
        store = self.context.store
        if not await store.take_lease(LEASE_NAME, self.context.owner, settings.lease_seconds):
            log.info("purge_skipped", reason="another replica is purging")
            return None
        try:
            rules = PurgeRules(settings.cancelled_after, settings.failed_after, settings.max_age)
            outcomes = [
                await self._purge_job(candidate, dry_run)
                for candidate in await store.purge_candidates(rules, limit=settings.max_deletes_per_run)
            ]
            room = settings.max_deletes_per_run - len(outcomes)
            if settings.orphans and room > 0:
                outcomes += await self._purge_orphans(room, dry_run)
        finally:
            await store.release_lease(LEASE_NAME, self.context.owner)
        log.info("purge_finished", dry_run=dry_run, deleted=sum(o.deleted for o in outcomes), considered=len(outcomes))
        return outcomes

    def schedule(self, scheduler: AsyncIOScheduler) -> None:
        """Add the interval job that runs `run_once`; after a reload, change it only if the interval changed.

        A run reads the purge settings afresh, so only the interval needs the schedule touched. An unchanged
        interval keeps the next run time (reloads more frequent than the interval must not postpone the purge
        for ever); a new one is counted from now, but never later than the run already due.
        """
        settings = self.context.settings.purge
        job = scheduler.get_job(SCHEDULE_ID)
        if not settings.enabled:
            if job is not None:
                scheduler.remove_job(SCHEDULE_ID)
            return
        interval = settings.interval
        if job is None:
            scheduler.add_job(
                self._scheduled_run,
                "interval",
                seconds=interval.total_seconds(),
                id=SCHEDULE_ID,
                max_instances=1,
                coalesce=True,
            )
            return
        if job.trigger.interval == interval:
            return
        due = job.next_run_time
        job = job.reschedule("interval", seconds=interval.total_seconds())
        if due is not None and job.next_run_time is not None and due < job.next_run_time:
            job.modify(next_run_time=due)

    async def finish(self, grace: float) -> None:
        """Let a scheduled run in flight end within `grace` seconds, else cancel it and wait for it to unwind.

        Call it with the scheduler paused, before shutting it down: APScheduler's `shutdown(wait=False)` cancels
        a running coroutine job wherever it stands and does not wait for it, and a run still unwinding when the
        engine is disposed may never end.
        """
        run = self._scheduled
        if run is None:
            return
        done, _ = await asyncio.wait({run}, timeout=grace)
        if not done:
            log.warning("purge_interrupted", grace=grace)
            run.cancel()
            await asyncio.wait({run})

    async def _scheduled_run(self) -> None:
        self._scheduled = asyncio.current_task()
        metrics = self.context.metrics
        try:
            outcomes = await self.run_once()
            metrics.purge_run("skipped" if outcomes is None else "finished")
        except DATABASE_ERRORS as exc:  # an outage, not a bug: one line, as the workers log it; the next run retries
            metrics.purge_run("failed")
            log.warning("purge_failed", error=first_line(exc))
        except Exception:  # a failed pass must not stop later ones; a bug is logged with its traceback
            metrics.purge_run("failed")
            log.exception("purge_failed")
        finally:
            self._scheduled = None

    async def _purge_job(self, candidate: PurgeCandidate, dry_run: bool) -> PurgeOutcome:
        """Remove what one job left. Any failure is this candidate's alone: recorded on its job, the pass goes on."""
        job, model, store = candidate.job, candidate.model_name, self.context.store
        outcome = PurgeOutcome(candidate.policy, model, job.id, deleted=False)
        if dry_run:
            log.info("model_purged", dry_run=True, job_id=job.id, tuned_model=model, policy=candidate.policy)
            return outcome
        remote = self.context.remote(job)
        try:
            if candidate.create_unconfirmed:
                # A create that was never answered may have landed since the job ended: stop what it started,
                # so that the removal finds what it left.
                await self.context.backend.cancel(remote)
            await self.context.backend.remove(remote)
        except NotFound:
            return await self._found_nothing(candidate)
        except (ServiceError, ValueError) as exc:  # ValueError: the row names no valid model (a producer's write)
            error = str(exc)
            log.warning("purge_delete_failed", job_id=job.id, tuned_model=model, error=error)
            # Recorded on the job; tried again at the next run (once per purge.interval), never at once.
            await store.record_purge_failure(job, candidate.policy, error)
            return PurgeOutcome(candidate.policy, model, job.id, deleted=False, error=error)
        await store.mark_purged(candidate)
        self.context.metrics.purged(candidate.policy.value, dry_run=False)
        log.info("model_purged", dry_run=False, job_id=job.id, tuned_model=model, policy=candidate.policy)
        return PurgeOutcome(candidate.policy, model, job.id, deleted=True)

    async def _found_nothing(self, candidate: PurgeCandidate) -> PurgeOutcome:
        """Nothing of the job's is on the service. That is final unless a create sent for it was never answered
        and the job ended less than purge.late_create_window ago: such a create may still land, so the job is
        left for the next runs to look at again (a tombstone) rather than recorded as purged."""
        job, model = candidate.job, candidate.model_name
        window = self.context.settings.purge.late_create_window
        ended = job.finished_at or job.updated_at or job.created_at
        if candidate.create_unconfirmed and ended is not None and self.context.store.clock() < ended + window:
            until = ended + window
            log.info("purge_recheck_pending", job_id=job.id, tuned_model=model, until=until.isoformat())
            return PurgeOutcome(candidate.policy, model, job.id, deleted=False, recheck_until=until)
        log.info("model_already_gone", job_id=job.id, tuned_model=model)
        await self.context.store.mark_purged(candidate, already_gone=True)
        return PurgeOutcome(candidate.policy, model, job.id, deleted=False, already_gone=True)

    async def _purge_orphans(self, room: int, dry_run: bool) -> list[PurgeOutcome]:
        owned = [model async for model in self.context.backend.owned()]
        known = await self.context.store.existing_job_ids({model.owner.job_id for model in owned})
        orphans = [model for model in owned if model.owner.job_id not in known]
        outcomes: list[PurgeOutcome] = []
        for orphan in orphans:
            if len(outcomes) >= room:
                break
            name = orphan.name
            if dry_run:
                log.info("model_purged", dry_run=True, tuned_model=name, policy=PurgePolicy.ORPHAN)
                outcomes.append(PurgeOutcome(PurgePolicy.ORPHAN, name, None, deleted=False))
                continue
            try:
                await self.context.backend.remove(RemoteRef(orphan.owner, handle=None, model=name))
                error = None
            except NotFound:
                # Removed by an earlier run: Vertex AI keeps listing a tuning job (there is no deleting one) and
                # the model it made long after the model is gone. Nothing to do, nothing to report again.
                continue
            except ServiceError as exc:
                log.warning("purge_delete_failed", tuned_model=name, error=str(exc))
                error = str(exc)
            if error is None:
                detail = {"tuned_model": name, "job_id": orphan.owner.job_id}
                await self.context.store.record_event(None, "orphan_purged", detail)
                self.context.metrics.purged(PurgePolicy.ORPHAN.value, dry_run=False)
                log.info("model_purged", dry_run=False, tuned_model=name, policy=PurgePolicy.ORPHAN)
            outcomes.append(PurgeOutcome(PurgePolicy.ORPHAN, name, None, deleted=error is None, error=error))
        return outcomes
