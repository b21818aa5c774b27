"""idle: the resident memory and CPU of a daemon with nothing to do, over 60 s (--quick: 20 s).

A daemon with its default settings (SQLite, daemon.idle_interval 10 s, purge on, health server on) and no jobs,
against the emulator. Measured from 5 s after its daemon_started line: CPU seconds over the window from
/proc/<pid>/stat, RSS at the end and its peak (VmHWM) from /proc/<pid>/status.

On an idle daemon the wake-ups are the cost (some 0.2-0.4 ms of CPU each on a small VM, the check or query
inside them included). What still wakes it: each worker's safety net (a claim and a due-time query every
daemon.idle_interval), a loop-lag sample every 10 s, and the SQLite change watch's look every 5 s; the change
watch otherwise waits on inotify, and the job counts behind STATUS= and tunekeeper_jobs wait for a commit.
"""

from __future__ import annotations

import asyncio

from bench.context import Context
from bench.harness import DaemonProcess, EmulatorProcess, cpu_share, daemon_environment, database, empty_config
from bench.report import Figure, at_most

NAME = "idle"
SETTLE_S = 5.0
MB = 1024 * 1024


async def run(ctx: Context) -> list[Figure]:
    window = 20.0 if ctx.quick else 60.0
    directory = ctx.directory(NAME)
    async with (
        EmulatorProcess() as emu,
        database("sqlite", directory, None) as db,
        DaemonProcess(directory, daemon_environment(db.url, emu.url, empty_config(directory))) as daemon,
    ):
        await asyncio.sleep(SETTLE_S)
        first = daemon.sample()
        await asyncio.sleep(window)
        last = daemon.sample()
    share = cpu_share(first, last) * 100
    ctx.note(NAME, f"default settings, SQLite, no jobs; window {window:g} s after {SETTLE_S:g} s settling")
    return [
        at_most(NAME, "RSS at end", last.rss_bytes / MB, 100, "MB"),
        Figure(NAME, "peak RSS (VmHWM)", last.peak_rss_bytes / MB, "MB"),
        at_most(NAME, "CPU", share, 0.5, "% of a core"),
    ]
