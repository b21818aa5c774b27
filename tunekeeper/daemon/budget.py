"""The service's request budget: one token bucket (aiolimiter) that creates and evaluation calls share.

An evaluation may send hundreds of generateContent calls on the key that also creates the tuning jobs; taking
them from the same bucket keeps the daemon within one rate, whichever worker spends it. Polls are not counted:
the poll plan keeps them sparse, and a finished job must be seen finished.
"""

from __future__ import annotations

from collections.abc import Callable

from aiolimiter import AsyncLimiter

from tunekeeper.config import GeminiSettings, VertexSettings


def smooth_limiter(per_minute: float) -> AsyncLimiter:
    """A bucket for `per_minute` requests that bursts a second's worth at most (one request, below 60 a minute):
    an evaluation of hundreds of pairs is spread over the minute rather than sent at once."""
    capacity = max(1.0, per_minute / 60.0)
    return AsyncLimiter(capacity, capacity * 60.0 / per_minute)


class RequestBudget:
    def __init__(self, settings: Callable[[], GeminiSettings | VertexSettings]) -> None:
        self._settings = settings
        self._rate = settings().requests_per_minute
        self._limiter = smooth_limiter(self._rate)

    def limiter(self) -> AsyncLimiter:
        """The bucket to take one request from (`async with budget.limiter():`), rebuilt when a reload changed
        the rate."""
        rate = self._settings().requests_per_minute
        if rate != self._rate:
            self._rate = rate
            self._limiter = smooth_limiter(rate)
        return self._limiter
