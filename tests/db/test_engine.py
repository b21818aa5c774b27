"""Connection pools: the daemon keeps one SQLite connection and never opens a second; commands and tests keep
SQLAlchemy's default pool, so that holding a connection while opening another still works."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from tests.harness import TEST_API_KEY
from tunekeeper.config import DatabaseSettings, GeminiSettings, Settings
from tunekeeper.daemon.service import open_context
from tunekeeper.db.engine import make_engine
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore

POSTGRES = "postgresql+asyncpg://tunekeeper@db.example/tunekeeper"


def test_the_daemon_keeps_one_sqlite_connection_unless_told() -> None:
    assert DatabaseSettings().daemon_pool_size == 1
    assert DatabaseSettings(url=POSTGRES).daemon_pool_size == 5
    assert DatabaseSettings(pool_size=3).daemon_pool_size == 3
    assert DatabaseSettings(url=POSTGRES, pool_size=2).daemon_pool_size == 2


async def test_a_sqlite_pool_of_one_has_no_overflow(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, pool_size=1, pool_timeout=0.2)
    try:
        async with engine.connect() as held:
            await held.execute(sa.select(1))
            with pytest.raises(sa.exc.TimeoutError):
                async with engine.connect():
                    pass
    finally:
        await engine.dispose()


async def test_many_concurrent_store_calls_share_one_connection(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, pool_size=1)
    try:
        store = JobStore(engine)
        ids = await asyncio.gather(
            *(store.add_job(NewJob(display_name=f"job {n}", training_data=[])) for n in range(40))
        )
        counts = await asyncio.gather(*(store.count_by_state() for _ in range(40)))
        assert len(set(ids)) == 40
        assert all(sum(count.values()) == 40 for count in counts)
        assert engine.pool.checkedin() == 1
    finally:
        await engine.dispose()


async def test_without_a_pool_size_a_second_sqlite_connection_opens(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        async with engine.connect(), engine.connect() as second:  # (both in a transaction would wait for the lock)
            assert (await second.execute(sa.select(1))).scalar() == 1
    finally:
        await engine.dispose()


async def test_the_daemons_context_opens_a_pool_of_one_on_sqlite(sqlite_url: str) -> None:
    settings = Settings(
        database=DatabaseSettings(url=sqlite_url),
        gemini=GeminiSettings(base_url="http://127.0.0.1:9", api_key=SecretStr(TEST_API_KEY)),
    )
    async with open_context(settings) as context:
        assert context.store.engine.pool.size() == 1
