"""The service's request budget: one token bucket (aiolimiter) that creates and evaluation calls share.

An evaluation may send hundreds of generateContent calls on the key that also creates the tuning jobs; taking
them from the same bucket keeps the daemon within one rate, whichever worker spends it. Polls are not counted:
the poll plan keeps them sparse, and a finished job must be seen finished.
"""

from __future__ import annotations

from collections.abc import Callable

from aiolimiter import AsyncLimiter

from tunekeeper.config import GeminiSettings, VertexSettings


class RequestBudget:
    def __init__(self, settings: Callable[[], GeminiSettings | VertexSettings]) -> None:
        self._settings = settings
        self._rate = settings().requests_per_minute
        self._limiter = AsyncLimiter(self._rate, 60.0)

    def limiter(self) -> AsyncLimiter:
        """The bucket to take one request from (`async with budget.limiter():`), rebuilt when a reload changed
        the rate."""
        rate = self._settings().requests_per_minute
        if rate != self._rate:
            self._rate = rate
            self._limiter = AsyncLimiter(rate, 60.0)
        return self._limiter
