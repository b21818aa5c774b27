"""Event-loop lag: how late the loop wakes from a sleep it scheduled.

A healthy loop wakes within a millisecond or so; lag grows when a callback blocks (a synchronous call, a long
CPU-bound step), which delays every timer, poll and health check in the daemon at once.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from tunekeeper.daemon.metrics import Metrics


class LoopLagMonitor:
    """Measures lag every `interval` seconds, reports it into Metrics and keeps the last `window` samples."""

    def __init__(self, metrics: Metrics | None = None, *, interval: float = 0.5, window: int = 240) -> None:
        if interval <= 0 or window < 1:
            raise ValueError("interval must be > 0 and window >= 1")
        self.metrics = metrics
        self.interval = interval
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

    async def run(self) -> None:
        """Measure until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval)
            # The loop may wake a hair early (timer resolution); that is no lag.
            self.record(max(0.0, loop.time() - started - self.interval))


def _percentile(samples: deque[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
