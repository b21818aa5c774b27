"""polling: the daemon's progress-aware polling against three baselines, side by side on one emulator.

Every schedule follows its own N jobs (100; --quick 40) with the same seeded durations, uniform in 30 s - 10 min
at the service's pace of about one step per second (a job of D seconds has D steps). The daemon's jobs are
inserted into its database; each baseline's are created by the bench on the same emulator, each followed by an
asyncio loop that GETs the operation on the baseline's schedule (fixed 5 s as in the tutorial, the SDK's 1 s
growing x1.5 up to 20 s, fixed 10 s) and records when it saw it done. All run at once.

Figures per schedule: operation GETs per job (the emulator's per-model count; the create is not counted) and
detection lag p50/p95: for the daemon the job's `finished_at` in the database minus the emulator's `done_at`
for its model, for a baseline the moment its loop saw `done` minus `done_at`.

Time scale K (--time-scale, default 10): the emulator steps K times faster (step_seconds = 1/K) and every time
setting of the daemon is divided by K (poll min_interval, max_interval and min_step_seconds, idle_interval and
SQLite's watch_interval, each from its default, and the planner's constants in seconds, see
bench.scaled_daemon); the baselines' intervals too. Lags are reported multiplied back by K, so they read as
real-time seconds; fixed costs (a database write, an HTTP round trip, scheduling delays on a busy machine) are
multiplied by K too, which makes K > 1 pessimistic for lag. K = 1 is the real-time experiment (about 11 minutes).

Beside it, the pure simulation (bench.polling_sim: simulated clock, queueing delay and wobbling step rates) for
the same seed.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable

from bench import polling_sim
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
from bench.polling_sim import Fixed, Schedule, SdkBackoff
from bench.report import Figure, at_most
from tunekeeper.config import Settings

NAME = "polling"
DURATION_MIN_S, DURATION_MAX_S = 30.0, 600.0
MAX_POLLS = 2000  # per baseline job: a loop that needs more is broken
DAEMON = "tunekeeper"
BASELINES: dict[str, Callable[[], Schedule]] = {
    "fixed 5 s": lambda: Fixed(5.0),
    "sdk 1 s x1.5 to 20 s": SdkBackoff,
    "fixed 10 s": lambda: Fixed(10.0),
}


def durations(seed: int, jobs: int) -> list[int]:
    rng = random.Random(f"{seed}:polling")
    return [round(rng.uniform(DURATION_MIN_S, DURATION_MAX_S)) for _ in range(jobs)]


async def follow(emu: EmulatorProcess, model_id: str, steps: int, schedule: Schedule, k: float) -> float:
    """Create the model, then poll it on `schedule` (in real-time seconds, divided by k); when it saw done."""
    operation = await emu.create_model(model_id, steps)
    url = f"{emu.url}/v1/{operation['name']}"
    session = emu.session
    assert session is not None
    started = time.monotonic()
    delay = schedule.after_poll(0.0, 0, steps)
    for _ in range(MAX_POLLS):
        await asyncio.sleep(delay / k)
        async with session.get(url) as response:
            body = await response.json()
            seen = time.time()
        if response.status != 200:
            raise BenchError(f"baseline poll of {model_id}: HTTP {response.status}: {body}")
        if body.get("done"):
            return seen
        metadata = body.get("metadata", {})
        delay = schedule.after_poll(
            (time.monotonic() - started) * k, int(metadata.get("completedSteps", 0)), int(metadata["totalSteps"])
        )
    raise BenchError(f"baseline {model_id} not done after {MAX_POLLS} polls")


# The daemon's time settings (section, key) that a time-scaled run divides by K, from their defaults.
TIME_SETTINGS = (
    ("poll", "min_interval"),
    ("poll", "max_interval"),
    ("poll", "min_step_seconds"),
    ("poll", "quota_min_interval"),  # matters only where jobs wait for a slot (the quota scenario)
    ("daemon", "idle_interval"),
    ("database", "watch_interval"),  # SQLite's change watch, where the daemon has one
    ("vertex", "poll_max_interval_with_rate"),  # the Vertex AI backend's poll bounds (the vertex scenario)
    ("vertex", "poll_interval_before_steps"),
)


def scaled_settings(k: float) -> dict[str, str]:
    """TUNEKEEPER_* settings: every time setting in TIME_SETTINGS at its default divided by k."""
    sections = Settings.model_fields
    scaled = {}
    for section, key in TIME_SETTINGS:
        model = sections[section].annotation
        field = getattr(model, "model_fields", {}).get(key)
        if field is not None:
            scaled[f"{section.upper()}__{key.upper()}"] = f"{float(field.default) / k:g}"
    return scaled


def daemon_command(k: float) -> list[str]:
    return ["-m", "tunekeeper", "run"] if k == 1 else ["-m", "bench.scaled_daemon", f"{k:g}"]


async def run(ctx: Context) -> list[Figure]:
    k = ctx.time_scale
    jobs = 40 if ctx.quick else 100
    steps = durations(ctx.seed, jobs)
    directory = ctx.directory(NAME)
    settings = {
        **scaled_settings(k),
        "GEMINI__MAX_ACTIVE_JOBS": str(jobs),
        "GEMINI__CREATES_PER_MINUTE": "60000",
        "GEMINI__REQUESTS_PER_MINUTE": "6000000",
        "GEMINI__MAX_CONCURRENT_CREATES": "32",
    }
    lags: dict[str, list[float]] = {}
    gets: dict[str, list[float]] = {}
    async with (
        EmulatorProcess("--step-seconds", f"{1.0 / k:g}") as emu,
        database("sqlite", directory, None) as db,
        DaemonProcess(
            directory,
            daemon_environment(db.url, emu.url, empty_config(directory), **settings),
            command=daemon_command(k),
        ) as daemon,
    ):
        await db.insert_jobs([(f"poll {i}", n) for i, n in enumerate(steps)])
        followers = {
            (name, i): asyncio.create_task(follow(emu, f"bl-{index}-{i}", n, factory(), k))
            for index, (name, factory) in enumerate(BASELINES.items())
            for i, n in enumerate(steps)
        }

        async def daemon_done() -> bool:
            daemon.check_running()
            return await db.count("succeeded") == jobs

        deadline = time.monotonic() + DURATION_MAX_S / k * 1.5 + 60
        try:
            await wait_for(daemon_done, within=deadline - time.monotonic(), what="the daemon's jobs to succeed")
            async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                seen = dict(zip(followers, await asyncio.gather(*followers.values()), strict=True))
        finally:
            for task in followers.values():
                task.cancel()
        models = (await emu.stats())["models"]
        rows = await db.fetch("SELECT tuned_model_id, finished_at FROM tuning_jobs")

    for model_id, finished_at in rows:
        model = models[model_id]
        finished = epoch(finished_at)
        assert finished is not None
        lags.setdefault(DAEMON, []).append((finished - model["done_at"]) * k)
        gets.setdefault(DAEMON, []).append(model["operation_gets"])
    for index, name in enumerate(BASELINES):
        for i in range(jobs):
            model = models[f"bl-{index}-{i}"]
            lags.setdefault(name, []).append((seen[(name, i)] - model["done_at"]) * k)
            gets.setdefault(name, []).append(model["operation_gets"])

    per_job = {name: statistics.fmean(values) for name, values in gets.items()}
    figures = [
        Figure(NAME, f"{DAEMON}: GETs/job", per_job[DAEMON], "req"),
        at_most(NAME, f"{DAEMON}: GETs/job vs fixed 5 s", per_job[DAEMON] / per_job["fixed 5 s"], 0.2, "x"),
        Figure(NAME, f"{DAEMON}: lag p50", percentile(lags[DAEMON], 0.5), "s"),
        at_most(NAME, f"{DAEMON}: lag p95", percentile(lags[DAEMON], 0.95), 5.0, "s"),
    ]
    for name in BASELINES:
        figures += [
            Figure(NAME, f"{name}: GETs/job", per_job[name], "req"),
            Figure(NAME, f"{name}: lag p50", percentile(lags[name], 0.5), "s"),
            Figure(NAME, f"{name}: lag p95", percentile(lags[name], 0.95), "s"),
        ]
    figures += simulated(ctx.seed)
    ctx.note(
        NAME,
        f"{jobs} jobs per schedule, durations uniform {DURATION_MIN_S:g}-{DURATION_MAX_S:g} s (seed {ctx.seed}); "
        f"time scale K={k:g}: ran {k:g}x faster, lags multiplied back by {k:g}",
    )
    return figures


def simulated(seed: int) -> list[Figure]:
    """The planner and the baselines on polling_sim's simulated clock: 200 jobs, same seed."""
    figures = []
    for row in polling_sim.simulate(seed, 200):
        name = str(row["policy"]).split(" (")[0]
        figures += [
            Figure(f"{NAME} (sim)", f"{name}: GETs/job", float(row["requests_per_job"]), "req"),
            Figure(f"{NAME} (sim)", f"{name}: lag p95", float(row["lag_p95_s"]), "s"),
        ]
    return figures
