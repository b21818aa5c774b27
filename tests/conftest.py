"""Shared fixtures: migrated databases on SQLite and PostgreSQL.

- `sqlite_url`: a fresh, migrated SQLite file in the test's tmp_path.
- `postgres_url`: a fresh, migrated PostgreSQL database, dropped afterwards (see tests/pg.py for the server).
- `database_url`: either of the two; tests that take it run once per backend (ids `sqlite`, `postgres`).
- `postgres_server`: the PostgreSQL server in use; `restartable` only when the tests own it.
- `own_postgres`: a throwaway server of our own (always restartable), for tests that restart the server.

PostgreSQL is found (or started) only when a test asks for it. Tests that use it carry the `postgres` marker
without having to say so, so `-m "not postgres"` leaves it out.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg
from tests.pg import PostgresServer, run_async
from tunekeeper.db.migrate import upgrade

_POSTGRES_FIXTURES = frozenset({"postgres_url", "postgres_server", "own_postgres"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


def sqlite_url_of(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file migrated once per session; each test gets a copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "tunekeeper.db"
    run_async(lambda: upgrade(sqlite_url_of(path)))
    # The last connection to close checkpoints the WAL into the main file and deletes it, so the main file
    # alone is the whole database.
    assert not path.with_name(path.name + "-wal").exists(), "the template's WAL was not checkpointed"
    return path


@pytest.fixture
def sqlite_url(_sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "tunekeeper.db"
    shutil.copyfile(_sqlite_template, path)
    return sqlite_url_of(path)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = pg.find_server(tmp_path_factory)
    yield server
    server.close()


@pytest.fixture(scope="session")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = pg.start_throwaway(tmp_path_factory)
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url
