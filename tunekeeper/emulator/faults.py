"""Seeded fault and latency decisions, and the requests-per-minute limit.

Each API request takes exactly one draw from the fault generator (when any fault rate is set) and one from the
latency generator (when latency is set), in arrival order; the two generators are separate, so a run that
sends the same requests in the same order sees the same faults whatever the latency.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping

from tunekeeper.emulator.config import FAULT_KINDS


class FaultInjector:
    def __init__(self, seed: int, faults: Mapping[str, float], latency: tuple[float, float] | None) -> None:
        self.seed = seed
        self._faults_rng = random.Random(f"{seed}:faults")
        self._latency_rng = random.Random(f"{seed}:latency")
        self.faults: dict[str, float] = {}
        self._thresholds: tuple[tuple[float, str], ...] = ()
        self.latency = latency
        self.set_faults(faults)

    def set_faults(self, faults: Mapping[str, float]) -> None:
        self.faults = {kind: rate for kind, rate in faults.items() if rate > 0.0}
        thresholds: list[tuple[float, str]] = []
        cumulative = 0.0
        for kind in FAULT_KINDS:  # a fixed order, so a rate table means the same thing on every run
            rate = self.faults.get(kind, 0.0)
            if rate > 0.0:
                cumulative += rate
                thresholds.append((cumulative, kind))
        self._thresholds = tuple(thresholds)

    def reseed(self) -> None:
        self._faults_rng = random.Random(f"{self.seed}:faults")
        self._latency_rng = random.Random(f"{self.seed}:latency")

    def draw(self) -> str | None:
        """The fault for the next request, or None."""
        if not self._thresholds:
            return None
        roll = self._faults_rng.random()
        for threshold, kind in self._thresholds:
            if roll < threshold:
                return kind
        return None

    def delay(self) -> float:
        """Seconds of added latency for the next request (0 when none is configured)."""
        if self.latency is None:
            return 0.0
        low, high = self.latency
        return low if low == high else self._latency_rng.uniform(low, high)


class RequestLimiter:
    """At most `limit` requests in any sliding 60-second window."""

    WINDOW = 60.0

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._times: deque[float] = deque()

    def reset(self) -> None:
        self._times.clear()

    def admit(self, now: float) -> float | None:
        """None when the request may proceed (and is counted); else seconds until one would be admitted."""
        if self.limit is None:
            return None
        times = self._times
        while times and times[0] <= now - self.WINDOW:
            times.popleft()
        if len(times) >= self.limit:
            return max(times[0] + self.WINDOW - now, 0.001)
        times.append(now)
        return None
