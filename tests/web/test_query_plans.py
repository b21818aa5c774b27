"""The status page's queries read the indexes migration 0006 made for them, on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tunekeeper.db import tables
from tunekeeper.db.engine import make_engine
from tunekeeper.db.views import SUMMARY_COLUMNS, _latest_finished, _newest_per_state, finished_by_hour_query
from tunekeeper.states import ACTIVE, TERMINAL, State

_jobs = tables.tuning_jobs.c
_since = datetime.now(UTC) - timedelta(days=7)
QUERIES: dict[str, tuple[Callable[[bool], sa.Select[Any]], str]] = {
    "one state, newest first": (
        lambda _pg: _newest_per_state(SUMMARY_COLUMNS, [State.FAILED], [_jobs.id < 5000], 51),
        "ix_tuning_jobs_state_id",
    ),
    "in flight, one range per state": (
        lambda _pg: _newest_per_state(SUMMARY_COLUMNS, sorted(ACTIVE), [], 200, oldest_first=True),
        "ix_tuning_jobs_state_id",
    ),
    "recent failures": (
        lambda _pg: _latest_finished([State.FAILED, State.INVALID], 10),
        "ix_tuning_jobs_state_finished_at",
    ),
    "finished by hour": (
        lambda pg: finished_by_hour_query(_since, postgres=pg),
        "ix_tuning_jobs_state_finished_at",
    ),
}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    # As a database in use: most jobs finished long ago, a few of each other state.
    now, states = datetime.now(UTC), list(State)
    chosen = [State.SUCCEEDED if n % 50 else states[n // 50 % len(states)] for n in range(5000)]
    jobs = tables.tuning_jobs
    # queued by an INSERT, as producers queue them; the daemon's columns then written as the daemon writes them
    queued = [{"id": n + 1, "display_name": f"job {n}"} for n in range(len(chosen))]
    rows = [
        {"n": n + 1, "state": state, "finished_at": now - timedelta(hours=n) if state in TERMINAL else None}
        for n, state in enumerate(chosen)
    ]
    async with engine.begin() as connection:
        await connection.execute(sa.insert(jobs), queued)
        await connection.execute(sa.update(jobs).where(jobs.c.id == sa.bindparam("n")), rows)
    async with engine.begin() as connection:
        await connection.exec_driver_sql("ANALYZE")
    yield engine
    await engine.dispose()


@pytest.mark.parametrize("name", QUERIES)
async def test_the_status_pages_queries_use_their_index(engine: AsyncEngine, name: str) -> None:
    make, index = QUERIES[name]
    async with engine.connect() as connection:
        query = make(connection.dialect.name == "postgresql")
        sql = str(query.compile(connection, compile_kwargs={"literal_binds": True}))
        if connection.dialect.name == "postgresql":
            plan = "\n".join(row[0] for row in await connection.exec_driver_sql(f"EXPLAIN {sql}"))
        else:
            plan = "\n".join(row[-1] for row in await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    assert index in plan, plan
