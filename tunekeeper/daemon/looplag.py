"""Event-loop lag: how late the loop wakes from a sleep it scheduled.

A healthy loop wakes within a millisecond or so; lag grows when a callback blocks (a synchronous call, a long
CPU-bound step), which delays every timer, poll and health check in the daemon at once.

Each sample is a wake-up, and on an idle daemon wake-ups are most of what it spends, so the monitor samples
every BUSY_INTERVAL while there is work in hand and every IDLE_INTERVAL otherwise. A sleep that a blocked loop
overruns is measured either way; only the number of samples differs.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunekeeper.daemon.metrics import Metrics

BUSY_INTERVAL = 1.0
IDLE_INTERVAL = 10.0
WINDOW = 240


class LoopLagMonitor:
    """Measures lag every `interval` seconds (every `idle_interval` while `busy()` is false), reports it into
    Metrics and keeps the last `window` samples."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        interval: float = BUSY_INTERVAL,
        idle_interval: float = IDLE_INTERVAL,
        busy: Callable[[], bool] = lambda: True,
        window: int = WINDOW,
    ) -> None:
        if interval <= 0 or idle_interval <= 0 or window < 1:
            raise ValueError("interval and idle_interval must be > 0 and window >= 1")
        self.metrics = metrics
        self.interval = interval
        self.idle_interval = idle_interval
        self.busy = busy
        self._samples: deque[float] = deque(maxlen=window)
        self.measured = 0  # samples taken since start (or the last reset), beyond what the window holds

    @property
    def last(self) -> float | None:
        return self._samples[-1] if self._samples else None

    @property
    def recent_max(self) -> float | None:
        return max(self._samples) if self._samples else None

    @property
    def recent_p99(self) -> float | None:
        """The 99th percentile (nearest rank) of the samples in the window, in seconds; None before the first."""
        return _percentile(self._samples, 0.99)

    def reset(self) -> None:
        """Forget the window, e.g. at the start of a benchmark phase."""
        self._samples.clear()
        self.measured = 0

    def record(self, lag: float) -> None:
        self._samples.append(lag)
        self.measured += 1
        if self.metrics is not None:
            self.metrics.event_loop_lag(lag, _percentile(self._samples, 0.99) or 0.0)

    def next_pause(self) -> float:
        return self.interval if self.busy() else self.idle_interval

    async def run(self) -> None:
        """Measure until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            pause = self.next_pause()
            started = loop.time()
            await asyncio.sleep(pause)
            # The loop may wake a hair early (timer resolution); that is no lag.
            self.record(max(0.0, loop.time() - started - pause))


def _percentile(samples: deque[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
