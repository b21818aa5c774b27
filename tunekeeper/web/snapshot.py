"""One shared snapshot per view: however many pages are open, each view's queries run at most once per
`max_age` seconds.

A request finds the view's snapshot fresh and takes it. If the snapshot is older than `max_age`, the request
still takes it, and starts a load in the background unless one is under way (so no request waits for the
database once a view has been read, and a slow database delays the news, not the page). Only a view never read
(or dropped by `forget`) waits for its load. A load runs in its own task, so a viewer who leaves mid-load does
not cancel it for the others. Views are keyed (the overview, one job, one filtered list); the least recently
used go past `max_entries`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

V = TypeVar("V")


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    loaded_at: float


class SharedSnapshots:
    def __init__(self, max_age: float, *, max_entries: int = 512, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self.clock = clock
        self.loads = 0  # how many loads ran: the proof that viewers share them
        self._entries: OrderedDict[Hashable, _Entry[Any]] = OrderedDict()
        self._loading: dict[Hashable, asyncio.Task[Any]] = {}

    async def get(self, key: Hashable, load: Callable[[], Awaitable[V]], *, max_age: float | None = None) -> V:
        """The view's snapshot, loaded if older than `max_age` (default: the instance's)."""
        entry = self._entries.get(key)
        fresh = entry is not None and self.clock() - entry.loaded_at < (self.max_age if max_age is None else max_age)
        task = self._loading.get(key)
        if not fresh and task is None:
            task = asyncio.get_running_loop().create_task(self._load(key, load), name=f"snapshot-{key}")
            task.add_done_callback(_retrieve)
            self._loading[key] = task
        if entry is not None:
            self._entries.move_to_end(key)
            value: V = entry.value
            return value
        assert task is not None
        result: V = await asyncio.shield(task)
        return result

    def keep_only(self, *keys: Hashable) -> None:
        """Drop every snapshot but these (the benchmark measures the database's side this way)."""
        for key in [key for key in self._entries if key not in keys]:
            del self._entries[key]

    def forget(self, key: Hashable) -> None:
        """Drop a view's snapshot (an action changed it): the next request loads it afresh."""
        self._entries.pop(key, None)

    async def _load(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        try:
            self.loads += 1
            value = await load()
            self._entries[key] = _Entry(value, self.clock())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return value
        finally:
            del self._loading[key]


def _retrieve(task: asyncio.Task[Any]) -> None:
    # A load whose every viewer left still ends; its error must not be reported as never retrieved.
    if not task.cancelled():
        task.exception()
