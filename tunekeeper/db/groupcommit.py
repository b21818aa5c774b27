"""Group commit: many concurrent writers, one transaction per batch of their writes.

A writer calls `submit(item)` and waits for its own result. One batch is written at a time; the items that
arrive while it is being written wait and then go together in the next one. With one writer a batch is its
single item, written at once (no added latency); under load a batch grows to whatever arrived during the
previous write, so the cost of a transaction (a round trip to begin, one to commit, a pool checkout, on SQLite
a hop to the driver's thread for each statement) is shared by every job in it.

No task of its own: the first waiter to get the write lock writes the whole pending batch, its own item
included, and hands each other waiter its result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        isolate: Callable[[Exception], bool],
        max_batch: int = 500,
    ) -> None:
        """`write` stores a batch in one transaction and returns one result per item, in order. When it raises
        an error for which `isolate` is true (a bad item, not a lost database), each item of that batch is
        written again on its own, so that one bad item fails alone."""
        self._write = write
        self._isolate = isolate
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        try:
            async with self._write_lock():
                while not future.done():
                    batch = self._pending[: self._max_batch]
                    del self._pending[: self._max_batch]
                    await self._write_batch(batch, future)
        except asyncio.CancelledError:
            self._withdraw(future)
            raise
        return future.result()

    def _withdraw(self, future: asyncio.Future[R]) -> None:
        """A cancelled caller's item is not written later, unless a batch already took it."""
        self._pending = [(item, waiting) for item, waiting in self._pending if waiting is not future]
        if future.done() and not future.cancelled():
            future.exception()  # retrieved: nobody is left to raise it

    def _write_lock(self) -> asyncio.Lock:
        # One lock per event loop: a store may outlive a loop (asyncio.run in each CLI command and test).
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock

    async def _write_batch(self, batch: list[tuple[T, asyncio.Future[R]]], own: asyncio.Future[R]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
        except asyncio.CancelledError:
            # Our caller is going away (shutdown): the transaction rolled back. The other waiters' items go
            # back to the front of the queue for the next writer.
            self._pending[:0] = [(item, future) for item, future in batch if future is not own]
            raise
        except Exception as exc:
            if len(batch) > 1 and self._isolate(exc):
                for item, future in batch:
                    await self._write_batch([(item, future)], own)
                return
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
