"""sqlite_lock: a producer's plain INSERTs, with a 5 s busy timeout, while the daemon works on SQLite.

Producers write to the daemon's SQLite file while it works; each of the daemon's write transactions holds the
file's write lock, and a producer's INSERT waits for it up to its busy timeout (Python's sqlite3 default, 5 s;
`.timeout 5000` in the sqlite3 shell). Two loads, each on a fresh file and daemon with the throughput scenario's
raised limits:

- `tiny`: 1,000 one-step jobs (--quick 200), all inserted at once, as in `throughput`;
- `large data`: 40 jobs (--quick 10) of 5,000 examples each (about 250 kB of JSON) and 50 steps of 20 ms, so that
  claims and polls of jobs with large rows go on throughout.

While the daemon works, a producer thread inserts bursts of 40 one-job rows back to back (its own connection,
`sqlite3.connect(path, timeout=5)`, one autocommitted INSERT each), 0.2 s apart, until the load's jobs are done.
Figures: the INSERTs' latency p50 / p99 / max and how many failed (`database is locked`: the goal is none), and
the longest the daemon held the write lock (`tunekeeper_sqlite_write_lock_longest_seconds` from its /metrics).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.context import Context
from bench.harness import (
    INSERT_JOB,
    DaemonProcess,
    EmulatorProcess,
    daemon_environment,
    database,
    empty_config,
    job_data,
    percentile,
    wait_for,
)
from bench.report import Figure, at_most

NAME = "sqlite_lock"
BUSY_TIMEOUT_S = 5.0
BURST = 40
LOCK_GOAL_MS = BUSY_TIMEOUT_S * 1000 / 5  # the longest hold: a fifth of the producer's busy timeout
BURST_GAP_S = 0.2
SETTINGS = {
    "GEMINI__MAX_ACTIVE_JOBS": "10000",
    "GEMINI__CREATES_PER_MINUTE": "1000000",
    "GEMINI__MAX_CONCURRENT_CREATES": "64",
    "POLL__CONCURRENCY": "64",
    "POLL__MIN_STEP_SECONDS": "0",
    "POLL__MIN_INTERVAL": "0.1",
}


@dataclass
class Producer:
    """Bursts of plain INSERTs on a connection of its own, in a thread, until stopped."""

    path: Path
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        try:
            row = ("producer", job_data(1), 5, 5)
            while not self.stop.is_set():
                for _ in range(BURST):
                    started = time.perf_counter()
                    try:
                        with conn:  # one transaction per INSERT, committed
                            conn.execute(INSERT_JOB, row)
                    except sqlite3.OperationalError as exc:
                        self.failures.append(str(exc))
                    self.latencies.append(time.perf_counter() - started)
                self.stop.wait(BURST_GAP_S)
        finally:
            conn.close()


def large_training_data(examples: int) -> str:
    return json.dumps(
        [{"text_input": f"input number {i:08d} " * 2, "output": f"output {i:08d}"} for i in range(examples)]
    )


async def one_run(ctx: Context, label: str, jobs: list[tuple[str, str, int, int]], step: str) -> list[Figure]:
    directory = ctx.directory(f"{NAME}/{label.replace(' ', '-')}")
    async with (
        EmulatorProcess("--step-seconds", step) as emu,
        database("sqlite", directory, None) as db,
        DaemonProcess(directory, daemon_environment(db.url, emu.url, empty_config(directory), **SETTINGS)) as daemon,
        aiohttp.ClientSession() as session,
    ):
        path = Path(db.url.removeprefix("sqlite+aiosqlite:///"))
        await asyncio.sleep(1.0)
        producer = Producer(path)
        thread = threading.Thread(target=producer.run, name="producer")
        await db.executemany(INSERT_JOB, jobs)
        thread.start()
        try:

            async def load_done() -> bool:
                daemon.check_running()
                rows = await db.fetch(
                    "SELECT count(*) FROM tuning_jobs WHERE display_name != 'producer' AND state = 'succeeded'"
                )
                return int(rows[0][0]) == len(jobs)

            await wait_for(load_done, within=600, what=f"{label}: {len(jobs)} jobs to succeed", interval=0.25)
        finally:
            producer.stop.set()
            await asyncio.to_thread(thread.join)
        longest = await daemon.metric(session, "tunekeeper_sqlite_write_lock_longest_seconds")
    ms = [seconds * 1000 for seconds in producer.latencies]
    first_failure = f" (first: {producer.failures[0]})" if producer.failures else ""
    ctx.note(
        NAME,
        f"{label}: {len(jobs)} jobs; {len(ms)} producer INSERTs in bursts of {BURST} (busy timeout "
        f"{BUSY_TIMEOUT_S:g} s), {len(producer.failures)} failed{first_failure}",
    )
    return [
        Figure(NAME, f"{label}: INSERT p50", percentile(ms, 0.5), "ms"),
        Figure(NAME, f"{label}: INSERT p99", percentile(ms, 0.99), "ms"),
        Figure(NAME, f"{label}: INSERT max", max(ms), "ms"),
        at_most(NAME, f"{label}: INSERTs failed", len(producer.failures), 0, ""),
        at_most(NAME, f"{label}: longest daemon write lock", (longest or 0.0) * 1000, LOCK_GOAL_MS, "ms"),
    ]


async def run(ctx: Context) -> list[Figure]:
    tiny = [(f"tiny {i}", job_data(1), 5, 5) for i in range(200 if ctx.quick else 1000)]
    figures = await one_run(ctx, "tiny", tiny, "1ms")
    data = large_training_data(5_000)
    large = [(f"large {i}", data, 1, 100) for i in range(10 if ctx.quick else 40)]
    figures += await one_run(ctx, "large data", large, "20ms")
    return figures
