"""The daemon's columns are the daemon's (migration 0004): a producer's INSERT cannot set them, on both
backends; display names are bounded; on PostgreSQL README's producer role cannot write them at all."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import DESIGN_INSERT
from tests.pg import PostgresServer
from tunekeeper.db.engine import make_engine
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore

README = Path(__file__).resolve().parents[2] / "README.md"
FOREIGN_MODEL = "tunedModels/someone-elses-model"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT count(*) FROM tuning_jobs"))).scalar_one())


async def _insert(engine: AsyncEngine, columns: dict[str, Any]) -> None:
    names = ", ".join(columns)
    values = ", ".join(f":{name}" for name in columns)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"INSERT INTO tuning_jobs ({names}) VALUES ({values})"), columns)


async def test_a_row_inserted_as_succeeded_with_a_foreign_model_is_refused(engine: AsyncEngine) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="tk_daemon_columns"):
        await _insert(
            engine,
            {
                "display_name": "takeover",
                "training_data": "[]",
                "state": "succeeded",
                "tuned_model_name": FOREIGN_MODEL,
            },
        )
    assert await _count(engine) == 0


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("state", "tuning"),
        ("attempts", 3),
        ("tuned_model_name", FOREIGN_MODEL),
        ("tuned_endpoint_name", "projects/p/locations/us-central1/endpoints/1"),
        ("operation_name", "tunedModels/x/operations/y"),
        ("lease_owner", "someone"),
        ("training_uri", "gs://someone-elses-bucket/data.jsonl"),
        ("backend", "gemini"),
        ("eval_results", "[]"),
    ],
)
async def test_no_daemon_column_can_be_set_by_an_insert(engine: AsyncEngine, column: str, value: object) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="tk_daemon_columns"):
        await _insert(engine, {"display_name": "x", "training_data": "[]", column: value})
    assert await _count(engine) == 0


async def test_producers_and_the_daemon_still_queue_jobs(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql(DESIGN_INSERT)
    await _insert(engine, {"display_name": "explicit", "training_data": "[]", "state": "queued", "attempts": 0})
    store = JobStore(engine)
    job_id = await store.add_job(NewJob(display_name="cli", training_data=[{"text_input": "1", "output": "2"}]))
    assert await store.copy_job(job_id) is not None
    assert await _count(engine) == 4


async def test_a_display_name_of_megabytes_is_refused_at_insert_and_update(engine: AsyncEngine) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="ck_tuning_jobs_display_name_length"):
        await _insert(engine, {"display_name": "n" * 20_000_000, "training_data": "[]"})
    await _insert(engine, {"display_name": "n" * 1024, "training_data": "[]"})
    with pytest.raises(sa.exc.DBAPIError, match="ck_tuning_jobs_display_name_length"):
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE tuning_jobs SET display_name = :name"), {"name": "n" * 1025})
    assert await _count(engine) == 1


def _producer_recipe() -> str:
    text = README.read_text()
    found = re.search(r"<!-- producer-role recipe[^>]*-->\s*```sql\n(.*?)```", text, re.S)
    assert found, "README has no producer-role recipe"
    return "\n".join(line.strip() for line in found.group(1).splitlines())


def test_the_readme_producer_role_can_queue_and_cancel_but_not_write_daemon_columns(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    database = make_url(postgres_url).database
    assert database is not None
    role = f"tk_producer_{os.getpid()}"  # roles are the server's, not the database's: one per test process
    recipe = _producer_recipe().replace("tunekeeper_producer", role)
    owner_dsn = postgres_server.dsn(database)
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        owner.execute(recipe.encode())
    try:
        producer_dsn = make_url(owner_dsn).set(username=role, password=None).render_as_string(hide_password=False)
        with psycopg.connect(producer_dsn, autocommit=True) as producer:
            job_id = producer.execute(
                "INSERT INTO tuning_jobs (display_name, training_data) VALUES ('mine', '[]') RETURNING id"
            ).fetchone()
            assert job_id is not None
            producer.execute("UPDATE tuning_jobs SET cancel_requested = TRUE WHERE id = %s", job_id)
            for statement in (
                "UPDATE tuning_jobs SET state = 'succeeded' WHERE id = %s",
                "UPDATE tuning_jobs SET tuned_model_name = 'tunedModels/someone-elses-model' WHERE id = %s",
                "UPDATE tuning_jobs SET purged_at = now() WHERE id = %s",
                "INSERT INTO tuning_jobs (display_name, training_data, lease_owner) VALUES ('x', '[]', %s::text)",
            ):
                with pytest.raises(
                    psycopg.errors.InsufficientPrivilege, match="permission denied for table tuning_jobs"
                ):
                    producer.execute(statement, job_id)
            row = producer.execute("SELECT state, tuned_model_name, cancel_requested FROM tuning_jobs").fetchall()
            assert row == [("queued", None, True)]
    finally:
        with psycopg.connect(owner_dsn, autocommit=True) as owner:
            owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            owner.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
