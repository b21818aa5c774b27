"""The migration history, on both backends: what it creates, and how the schema check judges a database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine.interfaces import ReflectedColumn
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import DESIGN_INSERT
from tunekeeper.db import tables
from tunekeeper.db.engine import make_engine
from tunekeeper.db.migrate import (
    HEAD_REVISION,
    SchemaMismatch,
    alembic_config,
    check_schema,
    current_revision,
    script_head,
    upgrade,
)
from tunekeeper.states import State

EXPECTED_INDEXES = {
    "tuning_jobs": {
        "ix_tuning_jobs_claim",
        "ix_tuning_jobs_lease_expires_at",
        "ix_tuning_jobs_next_poll_at",
        "ix_tuning_jobs_cancel_requested",
        "uq_tuning_jobs_tuned_model_id",
    },
    "job_events": {"ix_job_events_job_id_id"},
    "leases": set(),
}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


def _schema(connection: sa.Connection) -> dict[str, Any]:
    inspector = sa.inspect(connection)
    return {
        name: {
            "columns": [(column["name"], column["nullable"]) for column in inspector.get_columns(name)],
            "indexes": sorted((index["name"] or "", index["unique"]) for index in inspector.get_indexes(name)),
        }
        for name in sorted(inspector.get_table_names())
    }


def test_head_revision_is_the_last_script() -> None:
    assert script_head() == HEAD_REVISION


async def test_upgrade_creates_the_tables(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        schema = await connection.run_sync(_schema)
    assert {"tuning_jobs", "job_events", "leases", "alembic_version"} <= schema.keys()
    for table, indexes in EXPECTED_INDEXES.items():
        assert indexes <= {name for name, _unique in schema[table]["indexes"]}
    assert await current_revision(engine) == HEAD_REVISION


async def test_upgrading_twice_changes_nothing(database_url: str, engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.exec_driver_sql(DESIGN_INSERT)
        before = await connection.run_sync(_schema)

    await upgrade(database_url)

    async with engine.connect() as connection:
        assert await connection.run_sync(_schema) == before
        assert await connection.scalar(sa.select(sa.func.count()).select_from(tables.tuning_jobs)) == 1
    assert await current_revision(engine) == HEAD_REVISION


async def test_columns_match_the_table_metadata(engine: AsyncEngine) -> None:
    def reflect(connection: sa.Connection) -> dict[str, list[ReflectedColumn]]:
        inspector = sa.inspect(connection)
        return {table.name: inspector.get_columns(table.name) for table in tables.metadata.sorted_tables}

    async with engine.connect() as connection:
        reflected = await connection.run_sync(reflect)
    for table in tables.metadata.sorted_tables:
        columns = reflected[table.name]
        assert [(c["name"], c["nullable"]) for c in columns] == [(c.name, c.nullable) for c in table.columns]
        # a column the metadata expects the database to fill in must have a default there
        for column in table.columns:
            if column.server_default is not None and not column.primary_key:
                assert next(c for c in columns if c["name"] == column.name)["default"] is not None, column.name


async def test_check_schema_passes_at_head(engine: AsyncEngine) -> None:
    await check_schema(engine)


async def test_check_schema_says_an_empty_database_is_behind(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    try:
        with pytest.raises(SchemaMismatch) as raised:
            await check_schema(engine)
        assert await current_revision(engine) is None
    finally:
        await engine.dispose()
    assert str(raised.value) == (
        f"database is at revision (empty), the code needs {HEAD_REVISION}: run `tunekeeper db upgrade`"
    )


async def test_check_schema_says_an_unknown_revision_is_ahead(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(sa.text("UPDATE alembic_version SET version_num = '0999'"))
    with pytest.raises(SchemaMismatch) as raised:
        await check_schema(engine)
    assert str(raised.value) == (
        f"database is at revision 0999, newer than this tunekeeper ({HEAD_REVISION}): upgrade tunekeeper"
    )


async def test_upgrade_brings_an_empty_database_to_head(empty_database_url: str) -> None:
    await upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        await check_schema(engine)
    finally:
        await engine.dispose()


async def test_downgrade_removes_everything(empty_database_url: str) -> None:
    await upgrade(empty_database_url)
    engine = make_engine(empty_database_url)

    def downgrade(connection: sa.Connection) -> None:
        config = alembic_config(empty_database_url)
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    try:
        async with engine.begin() as connection:
            await connection.run_sync(downgrade)
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        assert set(names) <= {"alembic_version", "sqlite_sequence"}
    finally:
        await engine.dispose()


async def test_a_producers_insert_gets_the_defaults(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.exec_driver_sql(DESIGN_INSERT)
    async with engine.connect() as connection:
        job = (await connection.execute(sa.select(tables.tuning_jobs))).one()
    assert job.state == State.QUEUED
    assert (job.priority, job.attempts, job.cancel_requested) == (0, 0, False)
    assert job.training_data == [{"text_input": "1", "output": "2"}, {"text_input": "3", "output": "4"}]
    # the database's default is read back by the code's UTCDateTime as an aware UTC datetime
    assert abs(job.created_at - datetime.now(UTC)) < timedelta(minutes=1)


async def test_state_must_be_one_of_the_states(engine: AsyncEngine) -> None:
    # checked on UPDATE (an INSERT may only say 'queued', see test_daemon_columns.py)
    async with engine.begin() as connection:
        await connection.execute(sa.insert(tables.tuning_jobs).values(display_name="x"))
    with pytest.raises(sa.exc.IntegrityError, match="ck_tuning_jobs_state"):
        async with engine.begin() as connection:
            await connection.execute(sa.update(tables.tuning_jobs).values(state="paused"))


async def test_learning_rate_and_multiplier_together_are_accepted(engine: AsyncEngine) -> None:
    # refused by the dispatcher with a message on the job, not by the database
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(tables.tuning_jobs).values(display_name="x", learning_rate=0.001, learning_rate_multiplier=1.0)
        )


async def test_two_jobs_never_share_a_tuned_model_id(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(sa.insert(tables.tuning_jobs), [{"display_name": "a"}, {"display_name": "b"}])
        await connection.execute(sa.insert(tables.tuning_jobs).values(display_name="c", tuned_model_id="m-1"))
    with pytest.raises(sa.exc.IntegrityError, match="tuned_model_id"):
        async with engine.begin() as connection:
            await connection.execute(sa.insert(tables.tuning_jobs).values(display_name="d", tuned_model_id="m-1"))


_jobs = tables.tuning_jobs
_now = sa.func.current_timestamp()
# The store's queries, in the forms it writes them, and the index each one needs.
INDEXED_QUERIES = {
    "ix_tuning_jobs_claim": sa.select(_jobs.c.id)
    .where(
        (_jobs.c.state == State.QUEUED)
        & _jobs.c.cancel_requested.is_(False)
        & (_jobs.c.next_attempt_at.is_(None) | (_jobs.c.next_attempt_at <= _now))
    )
    .order_by(_jobs.c.priority.desc(), _jobs.c.id)
    .limit(5),
    "ix_tuning_jobs_cancel_requested": sa.select(_jobs.c.id)
    .where((_jobs.c.state == State.QUEUED) & _jobs.c.cancel_requested.is_(True))
    .order_by(_jobs.c.id),
    "ix_tuning_jobs_next_poll_at": sa.select(_jobs.c.id)
    .where((_jobs.c.state == State.TUNING) & (_jobs.c.next_poll_at <= _now))
    .order_by(_jobs.c.next_poll_at),
    "ix_tuning_jobs_lease_expires_at": sa.select(_jobs.c.id).where(
        (_jobs.c.state == State.SUBMITTING) & (_jobs.c.lease_expires_at < _now)
    ),
    "ix_job_events_job_id_id": sa.select(tables.job_events.c.id)
    .where(tables.job_events.c.job_id == 42)
    .order_by(tables.job_events.c.id),
}


async def _fill(engine: AsyncEngine) -> None:
    """Jobs in every state, so that the planners' statistics resemble a database in use."""
    now, states = datetime.now(UTC), list(State)
    rows = []
    for n in range(900):
        state = states[n % len(states)]
        due = now + timedelta(seconds=n - 450)
        rows.append(
            {
                "n": n + 1,
                "state": state,
                "next_poll_at": due if state in (State.TUNING, State.SUCCEEDED) else None,
                "lease_expires_at": due if state in (State.SUBMITTING, State.CANCELLING) else None,
            }
        )
    events = [{"job_id": n % 90 + 1, "at": now, "kind": "claimed"} for n in range(900)]
    jobs = tables.tuning_jobs
    # queued by an INSERT, as producers queue them; the daemon's columns then written as the daemon writes them
    queued = [{"id": n + 1, "display_name": f"job {n}", "cancel_requested": n % 50 == 0} for n in range(900)]
    moved = sa.update(jobs).where(jobs.c.id == sa.bindparam("n"))
    async with engine.begin() as connection:
        await connection.execute(sa.insert(jobs), queued)
        await connection.execute(moved, rows)
        await connection.execute(sa.insert(tables.job_events), events)
    async with engine.begin() as connection:
        await connection.exec_driver_sql("ANALYZE")


@pytest.mark.parametrize("index", INDEXED_QUERIES)
async def test_the_stores_queries_use_their_index(engine: AsyncEngine, index: str) -> None:
    await _fill(engine)
    async with engine.connect() as connection:
        sql = str(INDEXED_QUERIES[index].compile(connection, compile_kwargs={"literal_binds": True}))
        if connection.dialect.name == "postgresql":
            plan = "\n".join(row[0] for row in await connection.exec_driver_sql(f"EXPLAIN {sql}"))
        else:
            plan = "\n".join(row[-1] for row in await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    assert index in plan, plan


async def test_0007_gives_jobs_overwritten_by_purged_their_outcome_back(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)

    def migrate(to: str, *, down: bool = False) -> Any:
        def run(connection: sa.Connection) -> None:
            config = alembic_config(empty_database_url)
            config.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(config, to)

        return run

    histories = {  # the job's events before 0007, oldest first: (kind, from_state, to_state)
        "was succeeded": [("succeeded", "tuning", "succeeded"), ("purged", "succeeded", "purged")],
        "was failed": [("tuning_failed", "tuning", "failed"), ("purged", "failed", "purged")],
        "was cancelled": [("cancelled", "cancelling", "cancelled"), ("purged", "cancelled", "purged")],
        "events lost, failed": [("submit_failed", "submitting", "failed")],
        "no history": [],
    }
    try:
        async with engine.begin() as connection:
            await connection.run_sync(migrate("0003"))
        async with engine.begin() as connection:
            for name, events in histories.items():
                job_id = (
                    await connection.execute(
                        sa.text("INSERT INTO tuning_jobs (display_name, state) VALUES (:name, 'purged') RETURNING id"),
                        {"name": name},
                    )
                ).scalar_one()
                for kind, from_state, to_state in events:
                    await connection.execute(
                        sa.text(
                            "INSERT INTO job_events (job_id, at, kind, from_state, to_state) "
                            "VALUES (:id, CURRENT_TIMESTAMP, :kind, :from_state, :to_state)"
                        ),
                        {"id": job_id, "kind": kind, "from_state": from_state, "to_state": to_state},
                    )
            await connection.execute(sa.text("INSERT INTO tuning_jobs (display_name, state) VALUES ('left', 'failed')"))

        async with engine.begin() as connection:
            await connection.run_sync(migrate("head"))
        async with engine.connect() as connection:
            states = dict((await connection.execute(sa.text("SELECT display_name, state FROM tuning_jobs"))).all())
        assert states == {
            "was succeeded": "succeeded",
            "was failed": "failed",
            "was cancelled": "cancelled",
            "events lost, failed": "failed",
            "no history": "succeeded",
            "left": "failed",
        }
        # The history is kept as it was written.
        async with engine.connect() as connection:
            purged_events = (
                await connection.execute(sa.text("SELECT count(*) FROM job_events WHERE kind = 'purged'"))
            ).scalar_one()
        assert purged_events == 3
        if engine.dialect.name == "postgresql":  # SQLite keeps its old check: it cannot change one in place
            with pytest.raises(sa.exc.IntegrityError, match="ck_tuning_jobs_state"):
                async with engine.begin() as connection:
                    await connection.execute(
                        sa.text("UPDATE tuning_jobs SET state = 'purged' WHERE display_name = 'left'")
                    )
        async with engine.begin() as connection:
            await connection.run_sync(migrate("0003", down=True))
        assert await current_revision(engine) == "0003"
    finally:
        await engine.dispose()
