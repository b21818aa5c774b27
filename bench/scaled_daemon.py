"""`python -m bench.scaled_daemon K`: `tunekeeper run` on a clock K times faster, for the time-scaled scenarios.

For polling and quota, the emulator's steps run K times faster and the bench divides every time setting of the
daemon by K (poll min/max interval, min_step_seconds, idle_interval). Two time constants are not settings, so
this wrapper scales them before the daemon starts:
- the poll planner's constants in seconds (`pollplan.AIM_ERROR_S`, `SCAN_S`, `AIM_MARGIN_S`), divided by K;
- the dispatcher's create-rate limiter: `AsyncLimiter(creates_per_minute, 60 s)` becomes
  `AsyncLimiter(creates_per_minute, 60 s / K)`, so the bucket holds the same burst and refills K times faster
  (scaling creates_per_minute instead would also make the burst K times larger).
Nothing else changes: it is the same daemon, in its own process.
"""

from __future__ import annotations

import sys

from aiolimiter import AsyncLimiter

from tunekeeper.cli import main
from tunekeeper.daemon import dispatcher, pollplan

SECONDS_CONSTANTS = ("AIM_ERROR_S", "SCAN_S", "AIM_MARGIN_S")


def scale(k: float) -> None:
    for name in SECONDS_CONSTANTS:
        setattr(pollplan, name, getattr(pollplan, name) / k)

    def scaled_limiter(max_rate: float, time_period: float = 60.0) -> AsyncLimiter:
        return AsyncLimiter(max_rate, time_period / k)

    setattr(dispatcher, "AsyncLimiter", scaled_limiter)  # noqa: B010  (replacing a class with a factory)


if __name__ == "__main__":
    scale(float(sys.argv[1]))
    raise SystemExit(main(["run", *sys.argv[2:]]))
