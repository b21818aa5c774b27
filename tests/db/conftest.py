"""Fixtures for the schema tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import PostgresServer

# The example from DESIGN.md's database contract: what a producer runs.
DESIGN_INSERT = (
    "INSERT INTO tuning_jobs (display_name, training_data) VALUES ('number generator', "
    """'[{"text_input": "1", "output": "2"}, {"text_input": "3", "output": "4"}]');"""
)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that has never been migrated."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database(migrated=False)
    yield server.url(name)
    server.drop_database(name)
