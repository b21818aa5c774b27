"""quota: 200 jobs of 20 s each under a quota of 10 concurrent tuning jobs and 60 creates per minute.

The emulator enforces the quota (`--max-active-tuning 10`); the daemon is told the same (max_active_jobs 10,
creates_per_minute 60). Jobs are inserted at once; the makespan runs from the insert's commit to the last
job's `finished_at`. It is compared with the lower bound the quota imposes on any client with zero overhead:
a greedy schedule in which each create waits for a free slot and for a token of the create-rate bucket
(aiolimiter's leaky bucket, as the dispatcher uses: a burst of 60, then one per second), and each job holds its
slot for exactly its 20 s. For 200 jobs the slots bind: 20 waves of 20 s = 400 s (the rate alone would allow
60 at once and the rest by 140 s, so 160 s).

Time-scaled like polling (--time-scale K, default 10; see bench.scaled_daemon): the emulator steps at 1/K s,
every time setting of the daemon is divided by K (polling's, and poll.quota_min_interval, which governs polling
while queued jobs wait for a slot) and its create-rate bucket refills K times faster with the same burst. The
makespan is reported multiplied back by K. --quick: 100 jobs.
"""

from __future__ import annotations

import heapq

from bench.context import Context
from bench.harness import (
    BenchError,
    DaemonProcess,
    EmulatorProcess,
    daemon_environment,
    database,
    empty_config,
    epoch,
    wait_for,
)
from bench.report import Figure, at_most
from bench.scenarios.polling import daemon_command, scaled_settings

NAME = "quota"
JOB_SECONDS = 20  # steps, at one step per (scaled) second
SLOTS = 10
CREATES_PER_MINUTE = 60


def lower_bound(jobs: int, slots: int = SLOTS, per_minute: float = CREATES_PER_MINUTE) -> float:
    """Makespan of the ideal greedy schedule: a create needs a free slot and a token (burst `per_minute`)."""
    free = [0.0] * slots
    finish = 0.0
    for n in range(1, jobs + 1):
        token = max(0.0, (n - per_minute) * 60.0 / per_minute)
        start = max(heapq.heappop(free), token)
        heapq.heappush(free, start + JOB_SECONDS)
        finish = max(finish, start + JOB_SECONDS)
    return finish


async def run(ctx: Context) -> list[Figure]:
    k = ctx.time_scale
    jobs = 100 if ctx.quick else 200
    directory = ctx.directory(NAME)
    settings = {
        **scaled_settings(k),
        "GEMINI__MAX_ACTIVE_JOBS": str(SLOTS),
        "GEMINI__CREATES_PER_MINUTE": str(CREATES_PER_MINUTE),
        "GEMINI__REQUESTS_PER_MINUTE": "6000000",  # the create rate alone is measured here
    }
    bound = lower_bound(jobs)
    async with (
        EmulatorProcess("--step-seconds", f"{1.0 / k:g}", "--max-active-tuning", str(SLOTS)) as emu,
        database("sqlite", directory, None) as db,
        DaemonProcess(
            directory,
            daemon_environment(db.url, emu.url, empty_config(directory), **settings),
            command=daemon_command(k),
        ) as daemon,
    ):
        inserted = await db.insert_jobs([(f"quota {i}", JOB_SECONDS) for i in range(jobs)])

        async def all_done() -> bool:
            daemon.check_running()
            return await db.count("succeeded") == jobs

        await wait_for(all_done, within=bound / k * 2 + 60, what=f"{jobs} quota jobs to succeed", interval=0.1)
        last = epoch((await db.fetch("SELECT max(finished_at) FROM tuning_jobs"))[0][0])
        stats = await emu.stats()
    if last is None:
        raise BenchError("no finished_at")
    makespan = (last - inserted) * k
    rejected = stats["requests"]["by_route_status"].get("tunedModels.create", {}).get("429", 0)
    ctx.note(
        NAME,
        f"{jobs} jobs x {JOB_SECONDS} s, {SLOTS} slots, {CREATES_PER_MINUTE}/min; K={k:g} (makespan multiplied back); "
        f"emulator saw at most {stats['max_concurrent_tuning']} tuning at once, {rejected} creates refused (429)",
    )
    return [
        Figure(NAME, "makespan", makespan, "s"),
        Figure(NAME, "lower bound", bound, "s"),
        at_most(NAME, "makespan over bound", (makespan / bound - 1) * 100, 5, "%"),
    ]
