"""Vertex AI tuning jobs: the in-memory store, the concurrent-tuning quota and the life cycle on the clock.

As in the Gemini store (gemini/models.py), progress is a pure function of the clock: a job that holds a slot
keeps an anchor (a time and the progress reached by then, in steps) and its seconds per step, and every read
computes the rest. Progress runs through phases of whole steps:

    [0, 1)        JOB_STATE_PENDING
    [1, 2)        JOB_STATE_RUNNING, sub-state PROCESSING_DATASET
    [2, 2 + N)    JOB_STATE_RUNNING, sub-state TUNING (N = the job's tuning steps)
    [2 + N, 3 + N) JOB_STATE_RUNNING, sub-state POST_PROCESSING
    3 + N         JOB_STATE_SUCCEEDED (or FAILED part-way through TUNING, for a job chosen to fail)

A cancel freezes progress and holds the job in JOB_STATE_CANCELLING for one step's time, then
JOB_STATE_CANCELLED. The concurrent-tuning quota counts slots: a job takes one when it starts and gives it back
when it ends. In the "wait" quota mode a job created while every slot is taken waits in PENDING (sub-state
WAITING_FOR_QUOTA) and gets the first slot that frees, in creation order, at the simulated moment it frees;
its clock starts then. `advance` replays those moments in time order on every read.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from tunekeeper.emulator.errors import ApiError, quota_failure
from tunekeeper.emulator.vertex.deployments import Deployments
from tunekeeper.emulator.vertex.validation import CreateJobRequest

PENDING = "JOB_STATE_PENDING"
RUNNING = "JOB_STATE_RUNNING"
SUCCEEDED = "JOB_STATE_SUCCEEDED"
FAILED = "JOB_STATE_FAILED"
CANCELLING = "JOB_STATE_CANCELLING"
CANCELLED = "JOB_STATE_CANCELLED"
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})

WAITING_FOR_QUOTA = "TUNING_JOB_STATE_WAITING_FOR_QUOTA"
PROCESSING_DATASET = "TUNING_JOB_STATE_PROCESSING_DATASET"
TUNING = "TUNING_JOB_STATE_TUNING"
POST_PROCESSING = "TUNING_JOB_STATE_POST_PROCESSING"

DEFAULT_BATCH_SIZE = 8  # examples per tuning step unless the request sets hyperParameters.batchSize (v1beta1)
_RUNNING_AT = 1.0  # progress at which each phase begins (see the module docstring)
_TUNING_AT = 2.0
_EXTRA_STEPS = 3.0  # pending, dataset processing and post-processing take one step each

CANCELLED_CODE = 1  # google.rpc.Code.CANCELLED
INTERNAL_CODE = 13  # google.rpc.Code.INTERNAL
CANCELLED_MESSAGE = "CANCELED"
FAILED_MESSAGE = "Tuning failed because of an internal error. Try again later."
QUOTA_METRIC = "aiplatform.googleapis.com/global_concurrent_tuning_jobs"


class JobSettings(Protocol):
    """The run-time settings the store reads (EmulatorState.settings)."""

    step_seconds: float
    fail_rate: float
    max_active_tuning: int | None


def job_not_found(name: str) -> ApiError:
    return ApiError("NOT_FOUND", f"TuningJob {name} does not exist.")


@dataclass(slots=True, eq=False)
class TuningJob:
    name: str  # projects/P/locations/L/tuningJobs/ID
    parent: str  # projects/P/locations/L
    job_id: str
    seq: int  # creation order; lists are ordered by it
    request: CreateJobRequest
    created_at: float
    batch_size: int
    epoch_end_steps: tuple[int, ...]  # tuning step at which each epoch completes; the last is the step count
    stop_point: float  # progress at which the job ends: 3 + N, or part-way through TUNING for a failure
    fails: bool
    step_seconds: float
    started_at: float | None = None  # when it got a quota slot (its clock starts then); None while waiting
    anchor_time: float = 0.0
    anchor_progress: float = 0.0
    cancel_at: float | None = None
    cancelled_at: float | None = None  # when CANCELLING becomes CANCELLED
    frozen_progress: float | None = None  # progress when the cancel came
    phase_times: dict[float, float] = field(default_factory=dict)  # progress threshold -> when it was reached
    model_name: str | None = None  # tunedModel.model and .endpoint, once SUCCEEDED
    endpoint_name: str | None = None
    settled: bool = False  # ended, with its side effects (the deployment) done

    @property
    def tuning_steps(self) -> int:
        return self.epoch_end_steps[-1]

    @property
    def experiment(self) -> str:
        return f"{self.parent}/metadataStores/default/contexts/tuning-experiment-{self.job_id}"

    def progress(self, now: float) -> float:
        if self.cancel_at is not None and now >= self.cancel_at:
            return self.frozen_progress or 0.0
        if self.started_at is None:
            return 0.0
        end = self.natural_end
        if end is not None and now >= end:
            return self.stop_point  # exactly, whatever the floating-point sum below would give
        reached = self.anchor_progress + (now - self.anchor_time) / self.step_seconds
        return min(max(reached, 0.0), self.stop_point)

    def time_at(self, threshold: float, now: float) -> float | None:
        """When progress reached `threshold`, if it has by `now`."""
        if threshold in self.phase_times:
            return self.phase_times[threshold]
        if self.started_at is None or self.progress(now) < threshold:
            return None
        return self.anchor_time + (threshold - self.anchor_progress) * self.step_seconds

    @property
    def natural_end(self) -> float | None:
        """When the job ends if nobody cancels it (None while it waits for a slot)."""
        if self.started_at is None:
            return None
        return self.anchor_time + (self.stop_point - self.anchor_progress) * self.step_seconds

    @property
    def release_time(self) -> float | None:
        """When the job gives its slot back (None while it waits for one)."""
        return self.cancelled_at if self.cancel_at is not None else self.natural_end

    def state(self, now: float) -> tuple[str, str | None]:
        """(JobState, v1beta1 TuningJobState or None) at `now`."""
        if self.cancel_at is not None and self.cancelled_at is not None and now >= self.cancel_at:
            return (CANCELLING, None) if now < self.cancelled_at else (CANCELLED, None)
        if self.started_at is None:
            return PENDING, WAITING_FOR_QUOTA
        progress = self.progress(now)
        if progress >= self.stop_point:
            return (FAILED, None) if self.fails else (SUCCEEDED, None)
        if progress < _RUNNING_AT:
            return PENDING, None
        if progress < _TUNING_AT:
            return RUNNING, PROCESSING_DATASET
        if progress < _TUNING_AT + self.tuning_steps:
            return RUNNING, TUNING
        return RUNNING, POST_PROCESSING

    def end_time(self, now: float) -> float | None:
        """When the job entered its terminal state, if it has by `now`."""
        if self.cancelled_at is not None:
            return self.cancelled_at if now >= self.cancelled_at else None
        end = self.natural_end
        return end if end is not None and now >= end else None

    def dataset_processed(self, now: float) -> bool:
        """Whether dataset processing is over (the job then reports its data stats)."""
        return self.progress(now) >= _TUNING_AT

    def completed_steps(self, now: float) -> int:
        return max(0, min(math.floor(self.progress(now) - _TUNING_AT), self.tuning_steps))

    def completed_epochs(self, now: float) -> int:
        steps = self.completed_steps(now)
        return sum(1 for end in self.epoch_end_steps if end <= steps)

    def start_time(self, now: float) -> float | None:
        """When the job first entered JOB_STATE_RUNNING."""
        return self.time_at(_RUNNING_AT, now)

    def update_time(self, now: float) -> float:
        """The time of the last change of state or sub-state up to `now`."""
        times = [self.created_at]
        if self.started_at is not None:
            times.append(self.started_at)
            for threshold in self._thresholds():
                reached = self.time_at(threshold, now)
                if reached is not None:
                    times.append(reached)
        for moment in (self.cancel_at, self.cancelled_at):
            if moment is not None and moment <= now:
                times.append(moment)
        return max(times)

    def _thresholds(self) -> tuple[float, ...]:
        tuning_end = _TUNING_AT + self.tuning_steps
        return tuple(
            point for point in (_RUNNING_AT, _TUNING_AT, tuning_end, self.stop_point) if point <= self.stop_point
        )

    def start(self, now: float, step_seconds: float) -> None:
        self.started_at = now
        self.anchor_time = now
        self.anchor_progress = 0.0
        self.step_seconds = step_seconds

    def rescale(self, step_seconds: float, now: float) -> None:
        """Continue from the current progress at a new speed; phases already reached keep their times. A job
        cancelling finishes its remaining cancel time at the new speed."""
        if self.cancelled_at is not None:
            if now < self.cancelled_at:
                self.cancelled_at = now + (self.cancelled_at - now) * step_seconds / self.step_seconds
            self.step_seconds = step_seconds
            return
        if self.started_at is not None:
            for threshold in self._thresholds():
                reached = self.time_at(threshold, now)
                if reached is not None:
                    self.phase_times[threshold] = reached
            self.anchor_progress = self.progress(now)
            self.anchor_time = now
        self.step_seconds = step_seconds

    def cancel(self, now: float) -> None:
        """Freeze progress; CANCELLING for one step's time, then CANCELLED."""
        self.rescale(self.step_seconds, now)  # keep the times of phases reached so far
        self.frozen_progress = self.progress(now)
        self.cancel_at = now
        self.cancelled_at = now + self.step_seconds


def epoch_end_steps(examples: int, epochs: int, batch_size: int) -> tuple[int, ...]:
    """Epoch e ends at step ceil(e * examples / batch size); so the step count is ceil(examples * epochs / batch)."""
    return tuple(math.ceil(epoch * examples / batch_size) for epoch in range(1, epochs + 1))


class TuningJobStore:
    def __init__(self, seed: int, settings: JobSettings, quota_mode: str, deployments: Deployments) -> None:
        self.seed = seed
        self.settings = settings
        self.quota_mode = quota_mode
        self.deployments = deployments
        self.reset()

    def reset(self) -> None:
        self._jobs: dict[str, TuningJob] = {}
        self._active: dict[str, TuningJob] = {}  # jobs holding a quota slot
        self._waiting: deque[TuningJob] = deque()  # jobs waiting for a slot, in creation order
        self._seq = 0
        self._used_ids: set[str] = set()  # ids are unique across projects and locations
        self._ids = random.Random(f"{self.seed}:vertex-tuning-ids")
        self._fate = random.Random(f"{self.seed}:vertex-tuning-fate")
        self.max_concurrent = 0

    # -- the clock -----------------------------------------------------------------------------------------

    def _has_free_slot(self) -> bool:
        limit = self.settings.max_active_tuning
        return limit is None or len(self._active) < limit

    def _grant(self, at: float) -> None:
        while self._waiting and self._has_free_slot():
            self._start(self._waiting.popleft(), at)

    def _start(self, job: TuningJob, at: float) -> None:
        job.start(at, job.step_seconds)
        self._active[job.name] = job
        self.max_concurrent = max(self.max_concurrent, len(self._active))

    def advance(self, now: float) -> None:
        """Replay, in time order, the slots freed up to `now` and the waiting jobs that took them."""
        self._grant(now)  # slots freed by a raised limit
        while self._active:
            job = min(self._active.values(), key=lambda item: (item.release_time or 0.0, item.seq))
            released = job.release_time
            if released is None or released > now:
                break
            del self._active[job.name]
            self._settle(job, released)
            self._grant(released)

    def _settle(self, job: TuningJob, at: float) -> None:
        """A job that ended at `at`: a succeeded one registers its model and endpoint, once."""
        if job.settled:
            return
        job.settled = True
        if job.cancel_at is None and not job.fails:
            request = job.request
            model, endpoint = self.deployments.deploy(
                job.parent,
                request.display_name or f"{request.model_id}-tuned-{job.job_id}",
                request.model_id,
                request.training.examples,
                request.labels,
                job.name,
                at,
            )
            job.model_name = model.versioned_name
            job.endpoint_name = endpoint.name

    # -- reads ---------------------------------------------------------------------------------------------

    def get(self, name: str, now: float) -> TuningJob:
        self.advance(now)
        job = self._jobs.get(name)
        if job is None:
            raise job_not_found(name)
        return job

    def under(self, parent: str, now: float) -> list[TuningJob]:
        """The jobs of one project and location, in creation order."""
        self.advance(now)
        return [job for job in self._jobs.values() if job.parent == parent]

    def counts(self, now: float) -> tuple[int, int]:
        """(jobs holding a quota slot, jobs waiting for one)."""
        self.advance(now)
        return len(self._active), len(self._waiting)

    def timelines(self, now: float) -> dict[str, dict[str, object]]:
        self.advance(now)
        return {
            name: {"created_at": job.created_at, "done_at": job.end_time(now), "state": job.state(now)[0]}
            for name, job in self._jobs.items()
        }

    # -- writes --------------------------------------------------------------------------------------------

    def create(self, parent: str, request: CreateJobRequest, now: float) -> TuningJob:
        self.advance(now)
        settings = self.settings
        free = self._has_free_slot() and not self._waiting
        if not free and self.quota_mode == "reject":
            limit = settings.max_active_tuning
            raise ApiError(
                "RESOURCE_EXHAUSTED",
                f"The number of concurrent tuning jobs has reached the quota limit of {limit} "
                f"({QUOTA_METRIC}). Wait for a tuning job to finish and try again.",
                [
                    quota_failure(
                        QUOTA_METRIC,
                        "GlobalConcurrentTuningJobsPerProject",
                        f"Limit: {limit} concurrent tuning jobs.",
                    )
                ],
            )
        job_id = self._new_id()
        batch_size = request.batch_size or DEFAULT_BATCH_SIZE
        ends = epoch_end_steps(len(request.training.examples), request.epoch_count, batch_size)
        # A fixed number of draws per create keeps later creates' fates independent of fail_rate changes.
        fails = self._fate.random() < settings.fail_rate
        fail_step = self._fate.randrange(ends[-1])
        stop_point = _TUNING_AT + fail_step + 0.5 if fails else ends[-1] + _EXTRA_STEPS
        self._seq += 1
        job = TuningJob(
            name=f"{parent}/tuningJobs/{job_id}",
            parent=parent,
            job_id=job_id,
            seq=self._seq,
            request=request,
            created_at=now,
            batch_size=batch_size,
            epoch_end_steps=ends,
            stop_point=stop_point,
            fails=fails,
            step_seconds=settings.step_seconds,
        )
        self._jobs[job.name] = job
        if free:
            self._start(job, now)
        else:
            self._waiting.append(job)
        return job

    def _new_id(self) -> str:
        # Tuning job ids are 19-digit numbers chosen by the server.
        while True:
            job_id = str(self._ids.randrange(10**18, 10**19))
            if job_id not in self._used_ids:
                self._used_ids.add(job_id)
                return job_id

    def cancel(self, name: str, now: float) -> TuningJob:
        """Cancel a pending or running job; a job already cancelling stays as it is; an ended one is refused."""
        job = self.get(name, now)
        state = job.state(now)[0]
        if state in TERMINAL_STATES:
            raise ApiError(
                "FAILED_PRECONDITION",
                f"Cannot cancel tuning job {name} because it is in state {state}.",
            )
        if state == CANCELLING:
            return job
        waiting = job.started_at is None
        job.cancel(now)
        if waiting:
            self._waiting.remove(job)  # it never held a slot; it leaves the queue at once
            job.settled = True
        return job

    def rescale(self, step_seconds: float, now: float) -> None:
        """A run-time change of step_seconds: running and waiting jobs continue at the new speed."""
        self.advance(now)
        for job in [*self._active.values(), *self._waiting]:
            job.rescale(step_seconds, now)
