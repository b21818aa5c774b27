"""Poller: follows every tuning job's remote work from one loop, and records progress and outcomes.

No task lives per job: each job's `next_poll_at` is in the database, due jobs are claimed in batches and
polled concurrently, and the next poll time comes from the progress plan (`pollplan`), which aims just after
the estimated finish. A restart resumes from the stored times.

While queued jobs wait for a tuning slot (the dispatcher sets `slots_contended`), the plan polls the jobs
holding the slots more closely near their finish, so that a freed slot is noticed within a fraction of a
second. Polls that close together would spend more time going through the database (store the time, wait for
the claim loop, claim the job back) than between them, so in that final stretch the poll keeps its job and
asks again after the planned wait, for at most a third of the claim's lease; its progress is stored with the
hold's last poll.

A job still running `give_up_after` (vertex.give_up_after) after its submission is cancelled on the service and
failed: Vertex AI jobs can wait for quota or capacity indefinitely, and a slot held that long is better freed.

Only a poll whose job left `tuning` nudges the workers downstream (a slot is free; a success may be due for
evaluation); one that finds the job still running gives them nothing to do.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from tunekeeper.backends.googleapi.errors import NotFound, PermanentError, PermissionDenied, TransientError
from tunekeeper.backends.port import LossPoint, Progress, RemoteState, Status
from tunekeeper.config import Settings
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.pollplan import PollHistory, PollPolicy, next_poll_delay, observe
from tunekeeper.daemon.worker import JobWorker
from tunekeeper.db.records import Job

# With contended slots, a poll whose next one is due within this multiple of the contended lower bound keeps
# its job and asks again after the wait, rather than going through the database ...
HOLD_FACTOR = 2.0
# ... for at most this share of the lease the claim put on the job (its poll is not due again before then).
HOLD_LEASE_SHARE = 1 / 3


@dataclass(frozen=True, slots=True)
class PollAgain:
    """Poll this job again in `delay` seconds, keeping it: nothing is stored yet."""

    job: Job  # with this poll's progress folded in
    delay: float


def snapshots_json(losses: Sequence[LossPoint]) -> list[dict[str, Any]]:
    """The `snapshots` column: one loss point per finished epoch."""
    return [{"step": point.step, "epoch": point.epoch, "meanLoss": point.mean_loss} for point in losses]


def poll_policy(settings: Settings) -> PollPolicy:
    """The planner's policy: the [poll] settings, and the backend's own bounds for its jobs' shape."""
    poll = settings.poll
    return PollPolicy(
        min_interval=poll.min_interval,
        max_interval=poll.max_interval,
        max_interval_with_rate=settings.poll_max_interval_with_rate,
        no_total_interval=settings.poll_interval_before_steps,
        jitter=poll.jitter,
        min_step_seconds=poll.min_step_seconds,
        quota_min_interval=poll.quota_min_interval,
    )


def first_poll_delay(settings: Settings, accepted_at: datetime, total_steps: int, rng: random.Random) -> float:
    """Seconds from the create's answer to the first poll: the plan's wait before any progress can show."""
    return next_poll_delay(observe(None, accepted_at, 0, total_steps), accepted_at, poll_policy(settings), rng)


class Poller(JobWorker):
    name = "poller"
    nudges_downstream_after_each_job = False  # only a job that left tuning gives them work: see handle

    def __init__(self, context: DaemonContext, *, rng: random.Random | None = None) -> None:
        super().__init__(context)
        self._rng = rng or random.Random()
        self._failures: dict[int, int] = {}  # consecutive failed polls per job, for back-off
        # Queued jobs wait for a tuning slot that the jobs polled here hold; set by the dispatcher that feeds us.
        self.slots_contended = False
        self._next_due: datetime | None = None  # the earliest poll time last read; None: none, or not known
        self._next_due_fresh = False  # read by this turn's claim: the loop's next_due need not ask again

    @property
    def concurrency(self) -> int:
        return self.context.settings.poll.concurrency

    @property
    def policy(self) -> PollPolicy:
        return poll_policy(self.context.settings)

    async def claim(self, limit: int) -> Sequence[Job]:
        store = self.context.store
        if not await self._poll_due():
            return []
        self._next_due, self._next_due_fresh = None, False  # the claim moves what it takes a lease ahead
        due = await store.claim_due_polls(limit=limit, lease_seconds=self.context.settings.daemon.lease_seconds)
        now = store.clock()
        for job in due:
            if job.next_poll_at is not None:
                self.context.metrics.poll_lag(max(0.0, (now - job.next_poll_at).total_seconds()))
        return due

    async def next_due(self) -> datetime | None:
        if not self._next_due_fresh:
            self._next_due = await self.context.store.next_poll_due()
        self._next_due_fresh = False
        return self._next_due

    async def _poll_due(self) -> bool:
        """Whether a poll is due. Woken at the earliest known poll time it is; woken before it by a nudge (most
        announce writes that bring no poll forward), a read finds out, where a claim would take the write lock."""
        clock = self.context.store.clock
        if self._next_due is not None and self._next_due <= clock():
            return True
        self._next_due = await self.context.store.next_poll_due()
        self._next_due_fresh = self._next_due is None or self._next_due > clock()
        return not self._next_due_fresh

    async def handle(self, job: Job) -> None:
        hold = HOLD_LEASE_SHARE * self.context.settings.daemon.lease_seconds if self.slots_contended else 0.0
        outcome = await self._poll(job, hold)
        while isinstance(outcome, PollAgain):
            await asyncio.sleep(outcome.delay)
            hold -= outcome.delay
            outcome = await self._poll(outcome.job, hold)
        if outcome:
            self.nudge_downstream()  # its slot is free, and a success may be due for evaluation

    async def _poll(self, job: Job, hold: float) -> bool | PollAgain:
        """Ask the service about one job and record what it says (or, within `hold` seconds, poll again
        instead); True if this moved the job out of tuning."""
        try:
            status = await self.context.backend.status(self.context.remote(job))
            self._failures.pop(job.id, None)
        except NotFound as exc:
            return await self.context.store.mark_tuning_failed(job, error=f"no longer on the service: {exc}")
        except (TransientError, PermissionDenied) as exc:
            # PermissionDenied is a key or project problem, not this job's: keep the job and keep asking.
            await self._poll_failed(job, exc)
            return False
        except PermanentError as exc:
            return await self.context.store.mark_tuning_failed(job, error=str(exc))
        return await self._status_seen(job, status, hold)

    async def _status_seen(self, job: Job, status: Status, hold: float) -> bool | PollAgain:
        store = self.context.store
        if status.state is RemoteState.RUNNING:
            age = self._overdue(job)
            if age is not None:
                return await self._give_up(job, age)
            if status.progress is None:  # no progress to record: the finer state, and the next poll's time
                fields = {"sub_state": status.detail} if status.detail != job.sub_state else {}
                await self._schedule(job, self._history(job), progress=fields, event=None)
                return False
            # progress recorded (False), or the job kept for a close poll
            return await self._record_progress(job, status.progress, status.detail, hold) or False
        if status.state is RemoteState.SUCCEEDED:
            losses = status.progress.losses if status.progress is not None else ()
            return await store.mark_succeeded(
                job,
                model={
                    "tuned_model_name": status.model or job.tuned_model_name,
                    "tuned_endpoint_name": status.endpoint,
                    "sub_state": None,
                    "snapshots": snapshots_json(losses),
                    "mean_loss": losses[-1].mean_loss if losses else job.mean_loss,
                    "completed_steps": job.total_steps,
                    "progress_percent": 100.0,
                },
                wants_eval=self.context.settings.eval.enabled and await store.names_eval_pairs(job),
            )
        error = status.error or f"the service reports the work {status.state}"
        if status.state is RemoteState.CANCELLED:  # by someone outside tunekeeper: our cancels go via cancelling
            error = f"cancelled on the service, not through tunekeeper: {error}"
            return await store.mark_cancelled_elsewhere(job, error=error)
        return await store.mark_tuning_failed(job, error=error)

    async def _record_progress(self, job: Job, progress: Progress, detail: str | None, hold: float) -> PollAgain | None:
        now = self.context.store.clock()
        history = observe(self._history(job), now, progress.completed_steps, progress.total_steps)
        fields: dict[str, Any] = {
            "sub_state": detail,
            "total_steps": history.total_steps or job.total_steps,
            "completed_steps": history.completed_steps,
            "progress_percent": progress.percent,
            "progress_changed_at": history.progress_changed_at,
            "anchor_at": history.anchor_at,
            "anchor_steps": history.anchor_steps,
        }
        event = None
        known = len(job.snapshots) if isinstance(job.snapshots, list) else 0
        if len(progress.losses) > known:  # a new epoch finished: worth a line in the timeline
            latest = progress.losses[-1]
            fields["snapshots"] = snapshots_json(progress.losses)
            fields["mean_loss"] = latest.mean_loss
            event = {
                "epoch": latest.epoch,
                "step": latest.step,
                "mean_loss": latest.mean_loss,
                "percent": round(progress.percent, 1),
            }
        return await self._schedule(job, history, progress=fields, event=event, hold=hold)

    async def _schedule(
        self,
        job: Job,
        history: PollHistory | None,
        *,
        progress: dict[str, Any],
        event: dict[str, Any] | None,
        hold: float = 0.0,
    ) -> PollAgain | None:
        """Store the progress and the next poll's time; or, if that poll is close and `hold` allows, keep the job."""
        store = self.context.store
        now = store.clock()
        if history is None:
            history = observe(None, now, 0, job.total_steps or 0)
            progress.setdefault("progress_changed_at", history.progress_changed_at)
        policy = self.policy
        delay = next_poll_delay(history, now, policy, self._rng, contended=self.slots_contended)
        close = HOLD_FACTOR * min(policy.quota_min_interval, policy.min_interval)
        if event is None and delay <= min(close, hold):  # an epoch's event is stored at once
            return PollAgain(replace(job, **progress), delay)
        await store.record_progress(job, progress, next_poll_at=now + timedelta(seconds=delay), event=event)
        return None

    def _overdue(self, job: Job) -> timedelta | None:
        """How long the job has run since its submission, when that is past give_up_after; else None."""
        limit = self.context.settings.give_up_after
        if limit is None or job.submitted_at is None:
            return None
        age = self.context.store.clock() - job.submitted_at
        return age if age >= limit else None

    async def _give_up(self, job: Job, age: timedelta) -> bool:
        """Cancel the job's work on the service and fail the job, `age` after its submission; True if the job
        left tuning."""
        try:
            # Not waiting for the end: the job fails now, and the purge's failed policy removes what remains.
            await self.context.backend.cancel(self.context.remote(job), wait=False)
        except (TransientError, PermissionDenied) as exc:  # not cancelled yet: try again at the next poll
            await self._poll_failed(job, exc)
            return False
        except PermanentError as exc:  # e.g. NotOurs: nothing of ours to stop; the job fails all the same
            self.log.warning("give_up_cancel_failed", job_id=job.id, operation=job.operation_name, error=str(exc))
        limit = self.context.settings.give_up_after
        hours = age.total_seconds() / 3600
        self.log.warning("job_given_up", job_id=job.id, operation=job.operation_name, hours=round(hours, 2))
        error = (
            f"gave up: still not finished {hours:.1f} hours after submission (vertex.give_up_after is "
            f"{limit}); the tuning job was cancelled on the service"
        )
        return await self.context.store.mark_tuning_failed(job, error=error)

    async def _poll_failed(self, job: Job, error: Exception) -> None:
        failures = self._failures[job.id] = self._failures.get(job.id, 0) + 1
        policy = self.policy
        delay = min(policy.max_interval, policy.min_interval * 2 ** min(failures, 10))
        self.log.warning("poll_failed", job_id=job.id, operation=job.operation_name, error=str(error), retry_in=delay)
        store = self.context.store
        await store.record_progress(job, {}, next_poll_at=store.clock() + timedelta(seconds=delay), event=None)

    def _history(self, job: Job) -> PollHistory | None:
        if job.progress_changed_at is None:
            return None
        return PollHistory(
            total_steps=job.total_steps or 0,
            completed_steps=job.completed_steps or 0,
            progress_changed_at=job.progress_changed_at,
            anchor_at=job.anchor_at,
            anchor_steps=job.anchor_steps or 0,
        )
