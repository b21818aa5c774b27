"""When to poll a tuning operation next: pure planning from observed progress, no I/O.

The poller folds each poll's `completedSteps`/`totalSteps` into a `PollHistory` (five scalars stored on the job
row) with `observe`, then asks `next_poll_delay` how long to wait. Start the history from the create response
(`observe(None, accepted_at, 0, totalSteps)`), so the queue wait is measured from then; pass the poll's own time
as `now` to both calls.

Model of the service: after a queueing delay the step count rises roughly linearly to `totalSteps`, at no more
than about one step per second, and the operation is done at about the last step (or, where the service reports
every step done while it still works, as Vertex AI does while it post-processes, about one step's time later).
Counts are integers, so
seeing `s` at time `t` means the true progress was in `[s, s + 1)`. The rate comes from two readings: the
anchor (the first poll that saw progress) and the latest change (the first poll that saw the current count).
Because that poll came after the step boundary, the estimate errs late, the side we want: the poll lands just
after the finish. The same readings give the fastest rate they allow, hence the earliest possible finish.

Schedule:
- no rate yet (queueing, or a single progress reading): a moderate interval growing with the time since the
  count last changed, like the SDK's 1.5x back-off; with no total at all (`total_steps` 0, as Vertex AI reports
  while it processes the dataset or waits for quota), growing with the time since the first reading (or the
  first progress), whatever the count does, and starting from `no_total_interval` (such a phase lasts
  minutes to hours, not the seconds of a queue), up to `max_interval`;
- finish far: wait up to the earliest possible finish, at most a share of the estimated remaining time;
- finish near: once the window between the earliest and the estimated finish is narrow, aim just after the
  estimate; while it is wide, step through it at the lag budget;
- every step done but the operation still running: aim one step's time after the last change;
- estimate passed without completion (stall or slowdown): back off gently from `min_interval`, capped at a
  share of the job's own length, so a stalled job is neither hammered nor left for the longest wait on a stale
  estimate. A resume after a stall keeps the earlier rate (the pause is cut out of the baseline); a jump ahead
  restarts the measurement.
Save where a cap above applies, the wait is never shorter than half the time the remaining steps need at the
service's fastest pace (`policy.min_step_seconds`). Jitter of `policy.jitter` of the interval, both ways,
keeps jobs from polling in step.

Bounds: the result lies within `[min_interval, max_interval]` while no step rate is known. With one, the plan
bounds the detection lag itself (it aims at the finish, and far from it waits at most a share of the remaining
time), and the upper bound is `max_interval_with_rate` (never below `max_interval`, the default): it bounds how
long a job that stalls or fails between polls goes unnoticed, and how long a rate measured over a pause or
before a jump is trusted. For jobs of minutes, re-measuring every `max_interval` keeps the aim sharp for little;
for jobs of hours (Vertex AI) a poll every `max_interval` while the plan knows the finish is mostly waste.

Contended slots (`contended=True`: queued jobs wait because the jobs in flight fill the tuning quota): every
moment between a job's finish and its detection leaves a slot idle that a waiting job could use, so once a
step rate is known the lag budget shrinks. The plan waits, as above, until the earliest possible finish, then
polls every quarter of a step (the finish is uncertain by about one step, so a few polls cover it whatever the
step's length), never more often than `min(quota_min_interval, min_interval)` and never less often than the
uncontended scan. The overdue back-off starts from that budget too. Before a rate is known nothing changes;
the lower bound is `min(quota_min_interval, min_interval)`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

__all__ = ["PollHistory", "PollPolicy", "estimate_finish", "next_poll_delay", "observe"]

# Back-off while no rate is known: delay = min_interval + WAIT_GROWTH * seconds since the count last changed.
# 0.5 is the 1.5x geometric growth of the older SDK, expressed without a poll counter.
WAIT_GROWTH = 0.5
# Share of the time the remaining steps need at the service's fastest pace that is safe to wait on that bound
# alone (the pace is approximate).
FLOOR_SHARE = 0.5
# How much faster than the readings allow the rate may run for a while (steps are not perfectly linear).
MODEL_ERROR = 0.05
# While far from the estimate, wait at most this share of the remaining time.
APPROACH_SHARE = 0.8
# Aim straight at the estimate once the window between the earliest and the estimated finish is this narrow.
AIM_ERROR_S = 2.0
# Inside the window where the finish may fall, poll this often (seconds): the lag budget.
SCAN_S = 4.0
# Aim this far past the estimate (seconds); the estimate already leans late by up to one step.
AIM_MARGIN_S = 0.25
# Back-off after the estimate passed: delay = min_interval + OVERDUE_GROWTH * seconds overdue ...
OVERDUE_GROWTH = 0.25
# ... capped at this share of the job's estimated stepping time (then clamped to the policy's bounds).
STALL_SHARE = 0.25
# A change whose rate is surely more than this factor off the baseline's is a jump ahead or a resume after a
# stall (see observe).
BREAK_FACTOR = 2.0
# With contended slots, poll the window where the finish may fall every this share of one step's time.
CONTENDED_STEP_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class PollHistory:
    """What the planner remembers about one operation between polls (all storable as columns)."""

    # metadata.totalSteps at the latest poll; 0 while the service has not reported it.
    total_steps: int
    # metadata.completedSteps at the latest poll.
    completed_steps: int
    # The first poll that saw the current completed_steps (aware). While no step is done: the first
    # observation, so the queue-delay back-off grows from there.
    progress_changed_at: datetime
    # Start of the rate baseline (aware): the first poll that saw progress, or the first after a jump or after
    # the count went backwards. After a stall it moves later by the pause, so the rate excludes it.
    # None until progress is seen.
    anchor_at: datetime | None
    # completed_steps at anchor_at; 0 while anchor_at is None.
    anchor_steps: int


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """Bounds and spread of poll intervals, in seconds."""

    min_interval: float = 2.0
    # The longest wait while no step rate is known (queueing, no step count yet, a single reading).
    max_interval: float = 60.0
    # The longest wait once a step rate is known (max_interval, if that is higher): how long a job that stalls or
    # fails far from its estimated finish may go unnoticed. Raise it for jobs of hours (Vertex AI), where a poll
    # every max_interval while the plan already knows the finish is mostly waste.
    max_interval_with_rate: float = 0.0
    # The first wait of the back-off while the service reports no step count (Vertex AI waiting for quota or
    # processing the dataset), which then grows 1.5x as usual; min_interval if lower.
    no_total_interval: float = 0.0
    # Share of the interval applied both ways at random (0.1: +-10 %), never below min_interval.
    jitter: float = 0.1
    # The service's fastest pace (seconds per step): a lower bound on how long the remaining steps take. Lower it
    # for a sped-up emulator; 0 turns the bound off.
    min_step_seconds: float = 1.0
    # The shortest interval near a finish while slots are contended (min_interval, if that is lower).
    quota_min_interval: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.min_interval <= self.max_interval:
            raise ValueError(f"need 0 < min_interval <= max_interval, got {self.min_interval}, {self.max_interval}")
        if self.max_interval_with_rate < 0:
            raise ValueError(f"max_interval_with_rate must be >= 0, got {self.max_interval_with_rate}")
        if self.no_total_interval < 0:
            raise ValueError(f"no_total_interval must be >= 0, got {self.no_total_interval}")
        if self.quota_min_interval <= 0:
            raise ValueError(f"quota_min_interval must be > 0, got {self.quota_min_interval}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.min_step_seconds < 0:
            raise ValueError(f"min_step_seconds must be >= 0, got {self.min_step_seconds}")


def observe(history: PollHistory | None, now: datetime, completed_steps: int, total_steps: int) -> PollHistory:
    """Fold one poll's progress (taken at `now`) into the history; None starts a new one."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    total = max(0, total_steps)
    steps = max(0, completed_steps)
    if total:
        steps = min(steps, total)
    if history is None or steps < history.completed_steps:
        # New, or the count went backwards (the service restarted the job): earlier readings say nothing now.
        return PollHistory(total, steps, now, now if steps else None, steps)
    if steps == history.completed_steps:
        return history if total == history.total_steps else replace(history, total_steps=total)
    changed = replace(history, total_steps=total, completed_steps=steps, progress_changed_at=now)
    if history.anchor_at is None:
        return replace(changed, anchor_at=now, anchor_steps=steps)
    rate = _rate(history)
    if rate is None:
        return changed
    brk = _baseline_break(history, now, steps)
    if brk == "stall":
        # A resume after a stall: the rate measured before it still holds; move the baseline's start by the
        # pause so the baseline runs through this reading at that rate.
        return replace(changed, anchor_at=now - timedelta(seconds=(steps - history.anchor_steps) / rate))
    if brk == "jump":
        # Far faster than measured: steps were skipped, or the baseline was measured during a stall. Either way
        # it no longer predicts the rest, so measure afresh from here.
        return replace(changed, anchor_at=now, anchor_steps=steps)
    return changed


def estimate_finish(history: PollHistory, now: datetime) -> datetime | None:
    """When the operation should be done, or None before a step rate is known.

    Extrapolates from the latest change; if the latest poll (at `now`) saw no change for longer than a step,
    the estimate slips: the steps after the one under way still need their time from `now`.
    """
    planned = _planned_finish(history)
    rate = _rate(history)
    if planned is None or rate is None:
        return None
    left = max(0, history.total_steps - history.completed_steps - 1)
    return max(planned, now + timedelta(seconds=left / rate))


def next_poll_delay(
    history: PollHistory, now: datetime, policy: PollPolicy, rng: random.Random, *, contended: bool = False
) -> float:
    """Seconds to wait before polling again: at least policy.min_interval, at most policy.max_interval while no
    step rate is known, else at most max(policy.max_interval, policy.max_interval_with_rate).

    `contended`: queued jobs wait for a tuning slot, so this job's finish should be noticed sooner; the lower
    bound is then `min(policy.quota_min_interval, policy.min_interval)`.
    """
    base = _base_delay(history, now, policy, contended)
    jittered = base * (1.0 + rng.uniform(-policy.jitter, policy.jitter))
    return min(_highest(history, policy), max(_lowest(policy, contended), jittered))


def _lowest(policy: PollPolicy, contended: bool) -> float:
    return min(policy.quota_min_interval, policy.min_interval) if contended else policy.min_interval


def _highest(history: PollHistory, policy: PollPolicy) -> float:
    """The longest wait: max_interval without an estimate of the finish; with one, the plan bounds the lag, and
    only max_interval_with_rate bounds how long a stall or a failure goes unseen."""
    if _planned_finish(history) is None:
        return policy.max_interval
    return max(policy.max_interval, policy.max_interval_with_rate)


def _contended_budget(policy: PollPolicy, rate: float) -> float:
    """With contended slots, how often to poll where the finish may fall: a share of one step's time, at most
    the uncontended scan, at least the contended lower bound."""
    return max(_lowest(policy, True), min(SCAN_S, CONTENDED_STEP_SHARE / rate))


def _base_delay(history: PollHistory, now: datetime, policy: PollPolicy, contended: bool) -> float:
    lo, hi = policy.min_interval, _highest(history, policy)
    # Whole steps still to run after the one under way.
    left = max(0, history.total_steps - history.completed_steps - 1)
    # At the service's fastest pace those steps bound the finish from below, whatever else is known.
    floor = FLOOR_SHARE * left * policy.min_step_seconds
    rate = _rate(history)
    planned = _planned_finish(history)
    if rate is None or planned is None:
        # No estimate of the finish. With a total, the count has not moved yet (queueing): back off from the time
        # it last changed. Without one (Vertex AI reports no step count until the dataset is processed, none
        # while the job waits for quota, and perhaps steps without a total), a change in the count says nothing
        # of the finish, so back off from the first reading: otherwise every step would restart the back-off and
        # a job of hours would be polled at min_interval throughout.
        since, start = history.progress_changed_at, lo
        if not history.total_steps:
            # Such a phase (dataset processing, a wait for quota) takes minutes to hours, and nothing can end
            # successfully before it is over: start the back-off nearer its length than a queue's seconds.
            start = max(lo, policy.no_total_interval)
            if history.anchor_at is not None:
                since = history.anchor_at
        waited = max(0.0, _seconds(now - since))
        return max(floor, start + WAIT_GROWTH * waited)
    # The fastest rate the two readings allow (each count is a floor), with room for the rate to wobble.
    assert history.anchor_at is not None
    baseline = _seconds(history.progress_changed_at - history.anchor_at)
    fastest = (history.completed_steps - history.anchor_steps + 1) / baseline * (1.0 + MODEL_ERROR)
    earliest = max(floor, left / fastest)
    remaining = _seconds(planned - now)
    if contended:
        # A queued job waits for this slot: a lag costs it the slot's time, so aim tighter from here on.
        lo = _contended_budget(policy, rate)
    if remaining <= 0:
        # Overdue: the rate slowed or stalled. Grow gently from min_interval, within a share of the job's own
        # length, so a stalled job is neither hammered nor left for the longest wait on a stale estimate.
        stall_cap = max(lo, STALL_SHARE * history.total_steps / rate)
        return min(max(earliest, lo + OVERDUE_GROWTH * -remaining), stall_cap)
    target = max(remaining, earliest)
    if contended:
        # Up to the earliest possible finish as usual (re-measuring on the way when far), then every `lo`.
        return lo if earliest <= lo else min(hi, earliest, APPROACH_SHARE * target)
    aim = (target + AIM_MARGIN_S) / (1.0 - policy.jitter)  # lifted so symmetric jitter cannot land it early
    if target - earliest <= AIM_ERROR_S or target <= lo or history.completed_steps >= history.total_steps:
        # A narrow window; or every step done (post-processing), where there is no count to scan for and the end
        # is expected about a step after the last one: scanning at the lag budget would only cost polls.
        return aim
    if earliest > SCAN_S:
        # Far: the finish cannot come before `earliest`; a share of the remaining time re-measures the rate
        # in case it drifts.
        return min(hi, earliest, APPROACH_SHARE * target)
    # Inside the window where the finish may fall: step through it at the lag budget.
    return min(aim, earliest + SCAN_S)


def _rate(history: PollHistory) -> float | None:
    """Steps per second between the anchor and the latest change; None with fewer than two readings."""
    if history.anchor_at is None or history.completed_steps <= history.anchor_steps:
        return None
    elapsed = _seconds(history.progress_changed_at - history.anchor_at)
    if elapsed <= 0:
        return None
    return (history.completed_steps - history.anchor_steps) / elapsed


def _planned_finish(history: PollHistory) -> datetime | None:
    rate = _rate(history)
    if rate is None or history.total_steps <= 0:
        return None
    # Every step done and the operation still running (Vertex AI post-processes the model): expect the end about
    # one step's time after the last change, rather than back off from min_interval at once.
    left = max(1, history.total_steps - history.completed_steps)
    return history.progress_changed_at + timedelta(seconds=left / rate)


def _baseline_break(history: PollHistory, now: datetime, steps: int) -> Literal["jump", "stall"] | None:
    """Whether reaching `steps` at `now` is far faster ("jump") or slower ("stall") than the baseline allows."""
    assert history.anchor_at is not None
    baseline = _seconds(history.progress_changed_at - history.anchor_at)
    since = _seconds(now - history.progress_changed_at)
    done = history.completed_steps - history.anchor_steps
    if done <= 0 or baseline <= 0 or since <= 0:
        return None
    # Readings are floors: a span that went from count a to count b covered between b - a - 1 and b - a + 1 steps.
    new = steps - history.completed_steps
    if (new - 1) / since > BREAK_FACTOR * (done + 1) / baseline:
        return "jump"
    if BREAK_FACTOR * (new + 1) / since < (done - 1) / baseline:
        return "stall"
    return None


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()
