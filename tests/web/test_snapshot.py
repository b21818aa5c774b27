"""SharedSnapshots: one load per view and interval, whoever asks; a stale view is served while it reloads."""

from __future__ import annotations

import asyncio

import pytest

from tests.waiting import wait_until
from tunekeeper.web.snapshot import SharedSnapshots


class Source:
    """Loads that finish when told to, numbered."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def load(self) -> int:
        self.started += 1
        number = self.started
        await self.release.wait()
        return number


async def test_concurrent_viewers_share_one_load_then_a_stale_view_is_served_while_it_reloads() -> None:
    now = [0.0]
    snapshots = SharedSnapshots(2.0, clock=lambda: now[0])
    source = Source()

    first = [asyncio.create_task(snapshots.get("overview", source.load)) for _ in range(20)]
    await wait_until(lambda: source.started, within=2)
    source.release.set()
    assert await asyncio.gather(*first) == [1] * 20
    assert source.started == 1

    now[0] = 1.9  # still fresh
    assert await snapshots.get("overview", source.load) == 1
    assert source.started == 1

    source.release.clear()
    now[0] = 2.5  # stale: served at once, reloaded behind
    assert await asyncio.wait_for(snapshots.get("overview", source.load), 1) == 1
    assert await asyncio.wait_for(snapshots.get("overview", source.load), 1) == 1
    assert source.started == 2  # one reload for both
    source.release.set()

    async def reloaded() -> bool:
        return await snapshots.get("overview", source.load) == 2

    await wait_until(reloaded, within=2, message="the reload to be served")
    assert source.started == 2


async def test_a_failed_load_fails_its_waiters_and_the_next_request_loads_again() -> None:
    snapshots = SharedSnapshots(2.0)

    async def broken() -> int:
        raise OSError("database gone")

    with pytest.raises(OSError, match="database gone"):
        await snapshots.get("job", broken)

    async def working() -> int:
        return 7

    assert await snapshots.get("job", working) == 7
