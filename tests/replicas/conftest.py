"""Fixtures for the replica tests: every test here runs daemons on PostgreSQL (one database per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tunekeeper.db.engine import make_engine
from tunekeeper.db.store import JobStore


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(postgres_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> JobStore:
    return JobStore(engine)
