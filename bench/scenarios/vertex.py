"""vertex: the daemon on Vertex AI tuning jobs of tens of minutes to hours, beside the loops from Google's samples.

Every schedule follows its own N jobs (30; --quick 12) with the same seeded durations, uniform in 20 min - 2 h,
at one step per STEP_S (10 s) of real time, on one emulator's Vertex AI surface (a bucket, a service-account
key file, OAuth tokens from the emulator):

- **tunekeeper**: the daemon with `backend = "vertex"` and its default poll settings (time-scaled: `poll.*`,
  `vertex.poll_max_interval_with_rate`, `vertex.poll_interval_before_steps`), its jobs inserted into its
  database;
- **fixed 60 s** (the Vertex AI docs' `time.sleep(60)` then `refresh()`) and **fixed 10 s** (the google-genai
  README's `time.sleep(10)` then `tunings.get`): loops in the bench, one per job, that stage the training file,
  create the tuning job and GET it on that schedule until its state is terminal.

A job of D seconds is `N = D / STEP_S - 3` tuning steps (N examples, 8 epochs, the emulator's batch of 8), plus
the emulator's one step each of PENDING, dataset processing and post-processing.

Figures per schedule: GETs of the tuning job per job (the emulator's per-job count; the create and the daemon's
find-by-labels list are not counted) and detection lag p50/p95: for the daemon the job's `finished_at` minus
the emulator's `done_at` for its tuning job, for a loop the moment it saw the end minus `done_at`. Goals: the
daemon makes at most a quarter of the fixed 60 s loop's GETs per job, at a lag p95 no worse than the fixed 10 s
loop's (both as ratios, so that --repeat takes the median of like with like).

Time scale K (--vertex-time-scale, default 60, so the longest job takes 2 min): as in polling, the emulator steps
K times faster and every time setting of the daemon and of the loops is divided by K; lags are multiplied back.

The notes break the planner's GETs down by phase (before the step count is known, while tuning, after the last
step), from `simulate_planner`: the planner itself, fed the emulator's life cycle for the same jobs on a simulated
clock, as the poller feeds it; with the Vertex AI defaults, and with the bounds the Gemini API's jobs get
(`poll.max_interval` once the rate is known too, the back-off without a step count from `poll.min_interval`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from bench.context import Context
from bench.harness import (
    BenchError,
    DaemonProcess,
    EmulatorProcess,
    daemon_environment,
    database,
    empty_config,
    epoch,
    percentile,
    wait_for,
)
from bench.report import Figure, at_most
from bench.scenarios.polling import daemon_command, scaled_settings
from tunekeeper.backends.vertex.auth import GoogleTokens
from tunekeeper.backends.vertex.client import VertexClient
from tunekeeper.backends.vertex.types import TuningJobSpec
from tunekeeper.config import PollSettings, VertexSettings
from tunekeeper.daemon.pollplan import PollHistory, PollPolicy, next_poll_delay, observe

NAME = "vertex"
DURATION_MIN_S, DURATION_MAX_S = 20 * 60.0, 2 * 3600.0
STEP_S = 10.0  # real seconds per step
EPOCHS = 8  # with the emulator's batch of 8, a job of N examples runs N tuning steps
EXTRA_STEPS = 3  # PENDING, dataset processing, post-processing: one step each on the emulator
PROJECT, LOCATION, BUCKET = "bench-project", "us-central1", "stage"
BASE_MODEL = "gemini-2.5-flash"
ENDED = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"})
MAX_POLLS = 2000  # per loop job: a loop that needs more is broken
CREATES_AT_ONCE = 8  # the loops' stage-and-create calls in flight
DAEMON = "tunekeeper"
GEMINI_BOUNDS = "tunekeeper, Gemini's bounds"  # simulated only: what the Vertex AI defaults change
LOOPS = {"fixed 60 s": 60.0, "fixed 10 s": 10.0}
INSERT = "INSERT INTO tuning_jobs (display_name, training_data, epoch_count) VALUES (?, ?, ?)"


def tuning_steps(seed: int, jobs: int) -> list[int]:
    """Each job's tuning steps N, from durations uniform in DURATION_MIN_S..DURATION_MAX_S."""
    rng = random.Random(f"{seed}:vertex")
    return [round(rng.uniform(DURATION_MIN_S, DURATION_MAX_S) / STEP_S) - EXTRA_STEPS for _ in range(jobs)]


def examples(steps: int) -> list[dict[str, str]]:
    return [{"text_input": f"in {i}", "output": f"out {i}"} for i in range(steps)]


def jsonl(steps: int) -> bytes:
    lines = (
        json.dumps(
            {
                "contents": [
                    {"role": "user", "parts": [{"text": e["text_input"]}]},
                    {"role": "model", "parts": [{"text": e["output"]}]},
                ]
            }
        )
        for e in examples(steps)
    )
    return ("\n".join(lines) + "\n").encode()


async def follow(
    client: VertexClient,
    session: aiohttp.ClientSession,
    tokens: GoogleTokens,
    base_url: str,
    creates: asyncio.Semaphore,
    uri: str,
    steps: int,
    interval: float,
) -> tuple[str, float]:
    """Stage, create, then GET the tuning job every `interval` seconds until it ends: (its name, when seen)."""
    async with creates:
        await client.storage.upload(uri, jsonl(steps), "application/jsonl")
        job = await client.create_tuning_job(
            TuningJobSpec(base_model=BASE_MODEL, display_name=uri, training_uri=uri, epoch_count=EPOCHS)
        )
    url = f"{base_url}/v1beta1/{job.name}"
    for _ in range(MAX_POLLS):
        await asyncio.sleep(interval)
        async with session.get(url, headers={"Authorization": await tokens.authorization()}) as response:
            body = await response.json()
            seen = time.time()
        if response.status != 200:
            raise BenchError(f"loop GET of {job.name}: HTTP {response.status}: {body}")
        state = body.get("state")
        if state in ENDED:
            if state != "JOB_STATE_SUCCEEDED":
                raise BenchError(f"{job.name} ended {state}: {body.get('error')}")
            return job.name, seen
    raise BenchError(f"loop on {job.name} did not see it end after {MAX_POLLS} GETs")


def daemon_settings(k: float, jobs: int, key_file: Path, url: str, **extra: str) -> dict[str, str]:
    return {
        **scaled_settings(k),
        "BACKEND": "vertex",
        "VERTEX__PROJECT": PROJECT,
        "VERTEX__LOCATION": LOCATION,
        "VERTEX__BASE_URL": url,
        "VERTEX__STORAGE_URL": url,
        "VERTEX__CREDENTIALS_FILE": str(key_file),
        "VERTEX__STAGING_URI": f"gs://{BUCKET}/tunekeeper",
        "VERTEX__DEFAULT_BASE_MODEL": BASE_MODEL,
        "VERTEX__MAX_ACTIVE_JOBS": str(jobs),
        "VERTEX__CREATES_PER_MINUTE": "60000",
        "VERTEX__REQUESTS_PER_MINUTE": "6000000",
        "VERTEX__MAX_CONCURRENT_CREATES": str(CREATES_AT_ONCE),
        **extra,
    }


async def run(ctx: Context) -> list[Figure]:
    # The bench's own token source logs each token it fetches; those lines would only interleave with the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    k = ctx.vertex_time_scale
    jobs = 12 if ctx.quick else 30
    steps = tuning_steps(ctx.seed, jobs)
    directory = ctx.directory(NAME)
    key_file = directory / "key.json"
    emulator = EmulatorProcess(
        "--step-seconds",
        f"{STEP_S / k:g}",
        "--bucket",
        BUCKET,
        "--service-account-file",
        str(key_file),
        "--project",
        PROJECT,
    )
    rows: dict[str, list[tuple[Any, Any]]] = {}
    async with emulator as emu, database("sqlite", directory, None) as db:

        async def key_written() -> bool:
            return key_file.exists()

        await wait_for(key_written, within=30, what="the emulator's key file")
        daemons = {
            DAEMON: (
                db,
                DaemonProcess(
                    directory,
                    daemon_environment(
                        db.url, emu.url, empty_config(directory), **daemon_settings(k, jobs, key_file, emu.url)
                    ),
                    command=daemon_command(k),
                ),
            ),
        }
        for _, daemon in daemons.values():
            await daemon.start()
        try:
            seen = await follow_all(ctx, emu, daemons, key_file, steps, k)
            stats = await emu.stats()
            for name, (database_, _) in daemons.items():
                rows[name] = await database_.fetch("SELECT operation_name, finished_at FROM tuning_jobs")
        finally:
            for _, daemon in daemons.values():
                await daemon.stop()

    tuning = stats["tuning_jobs"]
    lags: dict[str, list[float]] = {}
    gets: dict[str, list[float]] = {}
    for name, found in rows.items():
        for operation, finished_at in found:
            finished = epoch(finished_at)
            assert finished is not None
            lags.setdefault(name, []).append((finished - tuning[operation]["done_at"]) * k)
            gets.setdefault(name, []).append(tuning[operation]["gets"])
    for name, by_job in seen.items():
        for job_name, at in by_job:
            lags.setdefault(name, []).append((at - tuning[job_name]["done_at"]) * k)
            gets.setdefault(name, []).append(tuning[job_name]["gets"])

    per_job = {name: statistics.fmean(values) for name, values in gets.items()}
    p95 = {name: percentile(values, 0.95) for name, values in lags.items()}
    figures = []
    for name in (DAEMON,):
        figures += [
            Figure(NAME, f"{name}: GETs/job", per_job[name], "req"),
            at_most(NAME, f"{name}: GETs/job vs fixed 60 s", per_job[name] / per_job["fixed 60 s"], 0.25, "x"),
            Figure(NAME, f"{name}: lag p50", percentile(lags[name], 0.5), "s"),
            Figure(NAME, f"{name}: lag p95", p95[name], "s"),
            at_most(NAME, f"{name}: lag p95 vs fixed 10 s", p95[name] / p95["fixed 10 s"], 1.0, "x"),
        ]
    for name in LOOPS:
        figures += [
            Figure(NAME, f"{name}: GETs/job", per_job[name], "req"),
            Figure(NAME, f"{name}: lag p50", percentile(lags[name], 0.5), "s"),
            Figure(NAME, f"{name}: lag p95", p95[name], "s"),
        ]
    ctx.note(
        NAME,
        f"{jobs} jobs per schedule, {min(steps) + EXTRA_STEPS}-{max(steps) + EXTRA_STEPS} steps of {STEP_S:g} s "
        f"(durations uniform {DURATION_MIN_S / 60:g} min - {DURATION_MAX_S / 3600:g} h, seed {ctx.seed}); time scale "
        f"K={k:g}: ran {k:g}x faster, lags multiplied back by {k:g}",
    )
    sim_figures, sim_notes = simulated(steps, ctx.seed)
    for text in sim_notes:
        ctx.note(NAME, text)
    return figures + sim_figures


async def follow_all(
    ctx: Context,
    emu: EmulatorProcess,
    daemons: Mapping[str, tuple[Any, DaemonProcess]],
    key_file: Path,
    steps: list[int],
    k: float,
) -> dict[str, list[tuple[str, float]]]:
    """Insert the daemons' jobs, start the loops' jobs, wait for all to end: what each loop saw, and when."""
    for index, (db, _) in enumerate(daemons.values()):
        await db.executemany(
            INSERT, [(f"vertex {index}-{i}", json.dumps(examples(n)), EPOCHS) for i, n in enumerate(steps)]
        )
    deadline = time.monotonic() + (max(steps) + EXTRA_STEPS) * STEP_S / k * 1.5 + 60
    async with (
        GoogleTokens(key_file=key_file) as tokens,
        VertexClient(
            project=PROJECT, location=LOCATION, tokens=tokens, base_url=emu.url, storage_url=emu.url
        ) as client,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session,
    ):
        creates = asyncio.Semaphore(CREATES_AT_ONCE)
        loops = {
            (name, i): asyncio.create_task(
                follow(
                    client,
                    session,
                    tokens,
                    emu.url,
                    creates,
                    f"gs://{BUCKET}/loops/{index}/{i}/train.jsonl",
                    n,
                    interval / k,
                )
            )
            for index, (name, interval) in enumerate(LOOPS.items())
            for i, n in enumerate(steps)
        }

        async def daemons_done() -> bool:
            ended = 0
            for db, daemon in daemons.values():
                daemon.check_running()
                failed = await db.fetch("SELECT id, last_error FROM tuning_jobs WHERE state = 'failed'")
                if failed:
                    raise BenchError(f"{daemon.name}: jobs failed: {failed[:3]}")
                ended += await db.count("succeeded")
            return ended == len(steps) * len(daemons)

        try:
            await wait_for(daemons_done, within=deadline - time.monotonic(), what="the daemons' jobs to succeed")
            async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                results = await asyncio.gather(*loops.values())
        finally:
            for task in loops.values():
                task.cancel()
    seen: dict[str, list[tuple[str, float]]] = {}
    for (name, _), result in zip(loops, results, strict=True):
        seen.setdefault(name, []).append(result)
    return seen


# ---- the planner on the emulator's life cycle, by phase --------------------------------------------------


@dataclass(frozen=True)
class LifeCycle:
    """A job on the emulator's Vertex surface: PENDING and dataset processing (no step count), `steps` tuning
    steps, post-processing (every step done, still running), then SUCCEEDED; each step `step_s` long."""

    steps: int
    step_s: float = STEP_S

    @property
    def done_s(self) -> float:
        return (self.steps + EXTRA_STEPS) * self.step_s

    def seen(self, t: float) -> tuple[int, int]:
        """(completedSteps, totalSteps) at `t` seconds after the create; total is 0 before it is known."""
        if t < 2 * self.step_s:
            return 0, 0
        return min(self.steps, int((t - 2 * self.step_s) / self.step_s)), self.steps


PHASES = ("before the step count", "tuning", "after the last step", "seeing the end")


@dataclass
class Simulated:
    gets: list[int]
    lags: list[float]
    phases: dict[str, int]


def vertex_policy() -> PollPolicy:
    """The planner's policy with the daemon's defaults for backend = "vertex" (as `poller.poll_policy` builds it)."""
    poll, vertex = PollSettings(), VertexSettings()
    return PollPolicy(
        min_interval=poll.min_interval,
        max_interval=poll.max_interval,
        max_interval_with_rate=vertex.poll_max_interval_with_rate,
        no_total_interval=vertex.poll_interval_before_steps,
        jitter=poll.jitter,
        min_step_seconds=poll.min_step_seconds,
        quota_min_interval=poll.quota_min_interval,
    )


def simulate_planner(steps: list[int], policy: PollPolicy, seed: int) -> Simulated:
    """The planner with `policy`, fed as the poller feeds it (the create's answer first, with no step count), on
    a simulated clock: no cost per poll, so it is the real-time schedule."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    out = Simulated([], [], dict.fromkeys(PHASES, 0))
    for n in steps:
        job = LifeCycle(n)
        history: PollHistory = observe(None, start, 0, 0)
        t = next_poll_delay(history, start, policy, rng)
        for polls in range(1, MAX_POLLS + 1):
            if t >= job.done_s:
                out.phases["seeing the end"] += 1
                out.gets.append(polls)
                out.lags.append(t - job.done_s)
                break
            completed, total = job.seen(t)
            phase = "before the step count" if total == 0 else "tuning" if completed < total else "after the last step"
            out.phases[phase] += 1
            now = start + timedelta(seconds=t)
            history = observe(history, now, completed, total)
            t += next_poll_delay(history, now, policy, rng)
        else:
            raise BenchError(f"the planner did not see a job of {n} steps end within {MAX_POLLS} polls")
    return out


def simulate_loop(steps: list[int], interval: float) -> Simulated:
    """A fixed loop on the same simulated jobs: GET after every `interval` until the end (its GETs only)."""
    return Simulated([math.ceil(LifeCycle(n).done_s / interval) for n in steps], [], {})


def simulated(steps: list[int], seed: int) -> tuple[list[Figure], list[str]]:
    """Figures and notes of the simulation: the planner (Vertex AI's defaults, and the bounds Gemini jobs get)
    and the loops on the same jobs."""
    vertex = vertex_policy()
    gemini = replace(vertex, max_interval_with_rate=0.0, no_total_interval=0.0)
    runs = {
        DAEMON: simulate_planner(steps, vertex, seed),
        GEMINI_BOUNDS: simulate_planner(steps, gemini, seed),
        **{name: simulate_loop(steps, interval) for name, interval in LOOPS.items()},
    }
    per_job = {name: statistics.fmean(run.gets) for name, run in runs.items()}
    figures, notes = [], []
    for name, run in runs.items():
        figures.append(Figure(f"{NAME} (sim)", f"{name}: GETs/job", per_job[name], "req"))
        # Lags for the planner only: a loop's simulated GETs fall on the step boundaries, as every job's end does.
        if name in (DAEMON, GEMINI_BOUNDS):
            figures.append(
                Figure(f"{NAME} (sim)", f"{name}: GETs/job vs fixed 60 s", per_job[name] / per_job["fixed 60 s"], "x")
            )
            notes.append(
                f"{name} (sim): GETs/job by what they saw: "
                + ", ".join(f"{phase} {count / len(steps):.1f}" for phase, count in run.phases.items())
            )
            figures.append(Figure(f"{NAME} (sim)", f"{name}: lag p95", percentile(run.lags, 0.95), "s"))
    return figures, notes
