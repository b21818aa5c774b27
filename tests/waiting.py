"""Waiting for a condition with a deadline: the only way tests wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(
    condition: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    *,
    within: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Call `condition` until it returns something truthy, and return that; fail after `within` seconds."""
    deadline = time.monotonic() + within
    last: T | None = None
    while True:
        result = condition()
        last = await result if asyncio.iscoroutine(result) else result  # type: ignore[assignment]
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within}s waiting for {message} (last value: {last!r})")
        await asyncio.sleep(interval)
