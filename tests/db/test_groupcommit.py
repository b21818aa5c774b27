"""GroupCommit on its own: how items are gathered into batches and how one batch's failure is handled.

The write function here records its batches in memory; the store's use of it against real databases is
tested in test_store.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from tunekeeper.db.groupcommit import GroupCommit


class BadItem(Exception):
    pass


class LostDatabase(Exception):
    pass


class Recorder:
    """A write function: it returns each item doubled. Held, each write waits for a permit (`allow`), so that
    items queue up behind it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.permits: asyncio.Semaphore | None = None
        self.writing = asyncio.Event()

    def hold(self) -> None:
        self.permits = asyncio.Semaphore(0)

    def allow(self, batches: int = 1) -> None:
        assert self.permits is not None
        for _ in range(batches):
            self.permits.release()

    async def write(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.writing.set()
        if self.permits is not None:
            await self.permits.acquire()
        if any(item < 0 for item in items):
            raise BadItem(f"negative item in {list(items)}")
        if 999 in items:
            raise LostDatabase("connection refused")
        return [item * 2 for item in items]


def group(recorder: Recorder, max_batch: int = 500) -> GroupCommit[int, int]:
    return GroupCommit(recorder.write, isolate=lambda error: isinstance(error, BadItem), max_batch=max_batch)


async def test_a_lone_item_is_written_at_once_on_its_own() -> None:
    recorder = Recorder()
    assert await group(recorder).submit(21) == 42
    assert recorder.batches == [[21]]


async def test_items_arriving_during_a_write_go_together_in_the_next_batch() -> None:
    recorder = Recorder()
    commit = group(recorder)
    recorder.hold()
    first = asyncio.create_task(commit.submit(1))
    await recorder.writing.wait()
    others = [asyncio.create_task(commit.submit(n)) for n in range(2, 12)]
    await asyncio.sleep(0)  # let them queue behind the write in progress
    recorder.allow(100)
    assert await first == 2
    assert [await task for task in others] == [n * 2 for n in range(2, 12)]
    assert recorder.batches == [[1], list(range(2, 12))]


async def test_a_batch_is_capped_at_max_batch() -> None:
    recorder = Recorder()
    commit = group(recorder, max_batch=4)
    recorder.hold()
    first = asyncio.create_task(commit.submit(0))
    await recorder.writing.wait()
    others = [asyncio.create_task(commit.submit(n)) for n in range(1, 10)]
    await asyncio.sleep(0)
    recorder.allow(100)
    await asyncio.gather(first, *others)
    assert recorder.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


async def test_a_bad_item_fails_alone_and_the_rest_of_its_batch_is_written() -> None:
    recorder = Recorder()
    commit = group(recorder)
    recorder.hold()
    first = asyncio.create_task(commit.submit(1))
    await recorder.writing.wait()
    good, bad, also_good = (asyncio.create_task(commit.submit(n)) for n in (2, -3, 4))
    await asyncio.sleep(0)
    recorder.allow(100)
    assert await first == 2
    assert await good == 4
    assert await also_good == 8
    with pytest.raises(BadItem, match=r"\[-3\]"):
        await bad
    assert recorder.batches == [[1], [2, -3, 4], [2], [-3], [4]]


async def test_a_lost_database_fails_the_whole_batch_without_retrying_item_by_item() -> None:
    recorder = Recorder()
    commit = group(recorder)
    recorder.hold()
    first = asyncio.create_task(commit.submit(1))
    await recorder.writing.wait()
    tasks = [asyncio.create_task(commit.submit(n)) for n in (2, 999)]
    await asyncio.sleep(0)
    recorder.allow(100)
    assert await first == 2
    for task in tasks:
        with pytest.raises(LostDatabase):
            await task
    assert recorder.batches == [[1], [2, 999]]


async def test_a_cancelled_waiter_is_not_written_later() -> None:
    recorder = Recorder()
    commit = group(recorder)
    recorder.hold()
    first = asyncio.create_task(commit.submit(1))
    await recorder.writing.wait()
    withdrawn = asyncio.create_task(commit.submit(5))
    kept = asyncio.create_task(commit.submit(6))
    await asyncio.sleep(0)
    withdrawn.cancel()
    recorder.allow(100)
    assert await first == 2
    assert await kept == 12
    assert withdrawn.cancelled()
    assert recorder.batches == [[1], [6]]


async def test_when_the_writer_is_cancelled_the_others_items_are_written_by_the_next() -> None:
    recorder = Recorder()
    commit = group(recorder)
    recorder.hold()
    first = asyncio.create_task(commit.submit(1))
    await recorder.writing.wait()
    # 2 and 3 queue; the task that takes the lock next (2's) writes both, and is cancelled mid-write.
    second = asyncio.create_task(commit.submit(2))
    third = asyncio.create_task(commit.submit(3))
    await asyncio.sleep(0)
    recorder.writing.clear()
    recorder.allow()
    assert await first == 2
    await recorder.writing.wait()
    assert recorder.batches[-1] == [2, 3]
    second.cancel()
    recorder.allow()
    assert await third == 6
    assert second.cancelled()
    assert recorder.batches == [[1], [2, 3], [3]]
