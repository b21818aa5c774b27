"""scale: one daemon tracking 10,000 jobs in `tuning` at once: its memory, CPU and event-loop lag.

Setting up 10,000 tuning jobs through the dispatcher would measure the dispatcher (the `throughput` scenario
does that), so the bench seeds them: it creates 10,000 models on the emulator through its API (the ids the
daemon would have chosen), then inserts the jobs directly in state `tuning` with their operation names, as
the dispatcher would have left them, their first polls spread over the next minute as in a daemon that has
been running for a while. Each model has 10 examples, 10 epochs, batch size 1: 100 steps of 12 s (a slow pace,
so that none finishes within the run); the daemon polls each about once a minute (its planner's max_interval),
some 170 polls/s in all, and records a progress event each epoch.

After a warm-up (30 s; --quick 15 s), over a window of 60 s (--quick 30 s): CPU seconds per second and RSS from
/proc, the peak RSS (VmHWM), and the daemon's `tunekeeper_event_loop_lag_recent_p99_seconds` from /metrics at
the end of the window (the p99 of its last 240 samples, taken every second while it has work in hand: the last
four minutes, so start-up and warm-up count too). The operation GETs the emulator served in the window are reported
as polls/s.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import aiohttp

from bench.context import Context
from bench.harness import (
    BASE_MODEL,
    BenchError,
    DaemonProcess,
    EmulatorProcess,
    cpu_share,
    daemon_environment,
    database,
    empty_config,
)
from bench.report import Figure, at_most
from tunekeeper import naming

NAME = "scale"
JOBS = 10_000
MB = 1024 * 1024
STEP_SECONDS = 12.0
EXAMPLES, EPOCHS, BATCH = 10, 10, 1  # 100 steps
SPREAD_S = 60.0
# Jobs already tuning: queued by an INSERT (the schema refuses a new row that sets the daemon's columns), then
# moved on as the daemon would have moved them.
INSERT = (
    "INSERT INTO tuning_jobs (id, display_name, training_data, epoch_count, batch_size, tuned_model_id)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
TUNING = (
    "UPDATE tuning_jobs SET state = 'tuning', attempts = 1, operation_name = ?, tuned_model_name = ?,"
    " total_steps = ?, completed_steps = 0, progress_percent = 0.0, submitted_at = ?, next_poll_at = ? WHERE id = ?"
)


async def create_models(emu: EmulatorProcess, names: list[str]) -> list[tuple[str, int]]:
    """Create the models (64 at a time): (operation name, total steps) for each."""
    examples = [{"text_input": f"in {i}", "output": f"out {i}"} for i in range(EXAMPLES)]
    session = emu.session
    assert session is not None
    gate = asyncio.Semaphore(64)

    async def create(model_id: str) -> tuple[str, int]:
        body = {
            "display_name": "scale job",
            "base_model": BASE_MODEL,
            "tuning_task": {
                "hyperparameters": {"epoch_count": EPOCHS, "batch_size": BATCH},
                "training_data": {"examples": {"examples": examples}},
            },
        }
        async with gate, session.post(f"{emu.url}/v1beta/tunedModels?tunedModelId={model_id}", json=body) as answer:
            if answer.status != 200:
                raise BenchError(f"create {model_id}: HTTP {answer.status}")
            operation = await answer.json()
        return operation["name"], int(operation["metadata"]["totalSteps"])

    return await asyncio.gather(*(create(name) for name in names))


async def run(ctx: Context) -> list[Figure]:
    warmup, window = (15.0, 30.0) if ctx.quick else (30.0, 60.0)
    directory = ctx.directory(NAME)
    rng = random.Random(f"{ctx.seed}:scale")
    settings = {"GEMINI__MAX_ACTIVE_JOBS": str(JOBS)}
    async with (
        EmulatorProcess("--step-seconds", f"{STEP_SECONDS:g}") as emu,
        database("sqlite", directory, None) as db,
    ):
        model_ids = [naming.tuned_model_id("scale job", i) for i in range(1, JOBS + 1)]
        started = time.monotonic()
        operations = await create_models(emu, model_ids)
        created_in = time.monotonic() - started
        now = time.time()
        data = json.dumps([{"text_input": f"in {i}", "output": f"out {i}"} for i in range(EXAMPLES)])
        rows = [
            (
                i,
                "scale job",
                data,
                EPOCHS,
                BATCH,
                model_id,
                operation,
                f"tunedModels/{model_id}",
                steps,
                db.stamp(now),
                db.stamp(now + rng.uniform(0.0, SPREAD_S)),
            )
            for i, (model_id, (operation, steps)) in enumerate(zip(model_ids, operations, strict=True), start=1)
        ]
        await db.executemany(INSERT, [row[:6] for row in rows])
        await db.executemany(TUNING, [(*row[6:], row[0]) for row in rows])
        env = daemon_environment(db.url, emu.url, empty_config(directory), **settings)
        async with (
            DaemonProcess(directory, env) as daemon,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        ):
            await asyncio.sleep(warmup)
            first, gets_before = daemon.sample(), await operation_gets(emu)
            await asyncio.sleep(window)
            last, gets_after = daemon.sample(), await operation_gets(emu)
            lag_p99 = await daemon.metric(session, "tunekeeper_event_loop_lag_recent_p99_seconds")
        tuning = await db.count("tuning")
    if lag_p99 is None:
        raise BenchError("the daemon's /metrics has no tunekeeper_event_loop_lag_recent_p99_seconds")
    if tuning != JOBS:
        raise BenchError(f"{JOBS - tuning} jobs left `tuning` during the run; the models must tune for longer")
    ctx.note(
        NAME,
        f"{JOBS:,} seeded tuning jobs (models created on the emulator in {created_in:.0f} s), SQLite; "
        f"warm-up {warmup:g} s, window {window:g} s",
    )
    return [
        at_most(NAME, "RSS at end", last.rss_bytes / MB, 300, "MB"),
        Figure(NAME, "peak RSS (VmHWM)", last.peak_rss_bytes / MB, "MB"),
        Figure(NAME, "CPU", cpu_share(first, last) * 100, "% of a core"),
        Figure(NAME, "polls served", (gets_after - gets_before) / (last.at - first.at), "req/s"),
        at_most(NAME, "event-loop lag p99", lag_p99 * 1000, 100, "ms"),
    ]


async def operation_gets(emu: EmulatorProcess) -> int:
    stats = await emu.stats()
    return int(stats["requests"]["by_route"].get("tunedModels.operations.get", 0))
