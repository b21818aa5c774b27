"""Fixtures for tests of the running daemon: an emulator on loopback and a store on the test's database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tunekeeper.db.engine import make_engine
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator, EmulatorConfig


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A quiet emulator whose jobs tune in a fraction of a second."""
    async with Emulator(EmulatorConfig(host="127.0.0.1", port=0, step_seconds=0.01, log_requests=False)) as emu:
        yield emu


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    engine = make_engine(database_url)
    yield JobStore(engine)
    await engine.dispose()
