"""Simulated comparison of poll schedules: requests per job and detection lag, on a simulated clock.

Run: `.venv/bin/python -m bench.polling_sim [--seed N] [--jobs N] [--spread uniform|log] [--stalls P] [--jumps P]`.

Each simulated job:
- is accepted at t=0; the create response already carries the operation (0 steps, totalSteps), which every
  schedule sees and which is not counted as a poll;
- waits in a queue for 0-20 s (uniform), then steps for its duration: 30 s - 10 min, uniform by default or
  log-uniform with `--spread log` (more short jobs, which makes the request budget tighter);
- has totalSteps = ceil(examples * epochs / batch) with 15-500 examples, 1-10 epochs and batch 4, 8 or 16,
  capped at one step per second of duration (the service does not step faster than about that);
- advances linearly with a mild wobble: progress fraction u + a*sin(2*pi*k*u)/(2*pi*k) for u = elapsed/duration,
  a in [-0.1, 0.1], k in {1, 2}, so the step rate drifts by up to 10 % during the run;
- shows its progress only when polled, as an integer completedSteps, and is done at the last step;
- optionally (`--stalls P`, `--jumps P`: shares of jobs) pauses once for 10-120 s, or skips 5-30 % of its
  remaining steps at once, somewhere between 10 % and 95 % of its run.
Detection lag is the time from the service finishing to the first poll that sees it done.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tunekeeper.daemon.pollplan import PollHistory, PollPolicy, next_poll_delay, observe

QUEUE_MAX_S = 20.0
DURATION_MIN_S = 30.0
DURATION_MAX_S = 600.0
POLL_LIMIT = 10_000  # a schedule that needs more polls than this for one job is broken


@dataclass(frozen=True)
class SimJob:
    queue_s: float
    duration_s: float
    total_steps: int
    wobble: float
    harmonic: int
    # Optional disturbances, at `disturb_at` (share of the stepping): a pause of `pause_s`, or a jump that skips
    # `jump_share` of the duration.
    disturb_at: float = 0.0
    pause_s: float = 0.0
    jump_share: float = 0.0

    @property
    def finish_s(self) -> float:
        return self.queue_s + self.duration_s * (1.0 - self.jump_share) + self.pause_s

    def completed_steps(self, t: float) -> int:
        if t >= self.finish_s:
            return self.total_steps
        if t <= self.queue_s:
            return 0
        at = self.queue_s + self.disturb_at * self.duration_s
        if t > at:
            t = max(at, t - self.pause_s) + self.jump_share * self.duration_s
        u = (t - self.queue_s) / self.duration_s
        k = 2 * math.pi * self.harmonic
        fraction = u + self.wobble * math.sin(k * u) / k
        return min(self.total_steps - 1, max(0, math.floor(self.total_steps * fraction)))


def make_jobs(
    rng: random.Random, jobs: int, spread: str = "uniform", stalls: float = 0.0, jumps: float = 0.0
) -> list[SimJob]:
    out = []
    for _ in range(jobs):
        if spread == "log":
            duration = math.exp(rng.uniform(math.log(DURATION_MIN_S), math.log(DURATION_MAX_S)))
        else:
            duration = rng.uniform(DURATION_MIN_S, DURATION_MAX_S)
        examples = rng.randint(15, 500)
        epochs = rng.randint(1, 10)
        batch = rng.choice((4, 8, 16))
        steps = min(math.ceil(examples * epochs / batch), math.floor(duration))
        job = SimJob(rng.uniform(0.0, QUEUE_MAX_S), duration, steps, rng.uniform(-0.1, 0.1), rng.choice((1, 2)))
        # Drawn for every job so that the base jobs are the same whatever the disturbance shares.
        at, pause, skip, roll = rng.uniform(0.1, 0.95), rng.uniform(10.0, 120.0), rng.uniform(0.05, 0.3), rng.random()
        if roll < stalls:
            job = replace(job, disturb_at=at, pause_s=pause)
        elif roll < stalls + jumps:
            job = replace(job, disturb_at=at, jump_share=skip * (1.0 - at))
        out.append(job)
    return out


class Schedule(Protocol):
    """One job's poll schedule: told what each poll saw (at `now`, seconds since accepted), says how long to wait."""

    def after_poll(self, now: float, completed_steps: int, total_steps: int) -> float: ...


class Fixed:
    """A plain loop: the tutorial (5 s) or the google-genai README (10 s)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval

    def after_poll(self, now: float, completed_steps: int, total_steps: int) -> float:
        return self.interval


class SdkBackoff:
    """google-generativeai's operation.result(): 1 s growing x1.5 up to 20 s."""

    def __init__(self, first: float = 1.0, factor: float = 1.5, cap: float = 20.0) -> None:
        self.next = first
        self.factor = factor
        self.cap = cap

    def after_poll(self, now: float, completed_steps: int, total_steps: int) -> float:
        delay = self.next
        self.next = min(self.cap, self.next * self.factor)
        return delay


class Planned:
    """tunekeeper's planner, fed through a real aware clock as the daemon would."""

    EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

    def __init__(self, policy: PollPolicy, rng: random.Random) -> None:
        self.policy = policy
        self.rng = rng
        self.history: PollHistory | None = None

    def after_poll(self, now: float, completed_steps: int, total_steps: int) -> float:
        at = self.EPOCH + timedelta(seconds=now)
        self.history = observe(self.history, at, completed_steps, total_steps)
        return next_poll_delay(self.history, at, self.policy, self.rng)


def schedules() -> dict[str, Callable[[random.Random], Schedule]]:
    policy = PollPolicy(min_interval=2.0, max_interval=60.0, jitter=0.1)
    return {
        "tunekeeper (2-60 s, jitter 0.1)": lambda rng: Planned(policy, rng),
        "fixed 5 s (tutorial)": lambda rng: Fixed(5.0),
        "sdk 1 s x1.5 to 20 s": lambda rng: SdkBackoff(),
        "fixed 10 s (genai README)": lambda rng: Fixed(10.0),
    }


def run_job(job: SimJob, schedule: Schedule) -> tuple[int, float]:
    """(polls, detection lag in seconds) for one job."""
    t = 0.0
    delay = schedule.after_poll(t, 0, job.total_steps)
    for polls in range(1, POLL_LIMIT + 1):
        t += delay
        if t >= job.finish_s:
            return polls, t - job.finish_s
        delay = schedule.after_poll(t, job.completed_steps(t), job.total_steps)
    raise RuntimeError(f"schedule did not see {job} finish within {POLL_LIMIT} polls")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def simulate(
    seed: int = 0, jobs: int = 200, spread: str = "uniform", stalls: float = 0.0, jumps: float = 0.0
) -> list[dict[str, float | str]]:
    """One row per schedule: requests per job (mean) and detection lag p50/p95/max, same jobs for each."""
    job_list = make_jobs(random.Random(seed), jobs, spread, stalls, jumps)
    rows: list[dict[str, float | str]] = []
    for name, factory in schedules().items():
        rng = random.Random(seed + 1)
        polls, lags = [], []
        for job in job_list:
            n, lag = run_job(job, factory(rng))
            polls.append(n)
            lags.append(lag)
        rows.append(
            {
                "policy": name,
                "requests_per_job": statistics.fmean(polls),
                "lag_p50_s": _percentile(lags, 0.50),
                "lag_p95_s": _percentile(lags, 0.95),
                "lag_max_s": max(lags),
            }
        )
    return rows


def format_table(rows: list[dict[str, float | str]]) -> str:
    base = next(float(r["requests_per_job"]) for r in rows if str(r["policy"]).startswith("fixed 5 s"))
    lines = [f"{'policy':<34}{'req/job':>9}{'vs 5 s':>8}{'lag p50':>9}{'lag p95':>9}{'lag max':>9}"]
    for r in rows:
        req = float(r["requests_per_job"])
        lines.append(
            f"{r['policy']!s:<34}{req:>9.1f}{req / base:>8.2f}"
            f"{float(r['lag_p50_s']):>8.1f}s{float(r['lag_p95_s']):>8.1f}s{float(r['lag_max_s']):>8.1f}s"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--spread", choices=("uniform", "log"), default="uniform")
    parser.add_argument("--stalls", type=float, default=0.0, help="share of jobs that pause once for 10-120 s")
    parser.add_argument("--jumps", type=float, default=0.0, help="share of jobs that skip 5-30 %% of the rest once")
    args = parser.parse_args()
    print(
        f"{args.jobs} jobs, durations {args.spread} 30 s - 10 min, queue 0-20 s, seed {args.seed}, "
        f"stalls {args.stalls:.0%}, jumps {args.jumps:.0%}"
    )
    print(format_table(simulate(args.seed, args.jobs, args.spread, args.stalls, args.jumps)))


if __name__ == "__main__":
    main()
