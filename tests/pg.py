"""PostgreSQL for the tests: find a server or start one, and hand out fresh, migrated databases.

Where the server comes from (DESIGN.md, "Testing conventions"):
  1. $TUNEKEEPER_TEST_POSTGRES_URL (its database is used for administration: CREATE/DROP DATABASE);
  2. else a server on 127.0.0.1:5432, if one answers (user postgres, trust auth);
  3. else a throwaway server started with pytest-postgresql's executor, where pg_ctl exists;
  4. else the tests skip, with the reason; TUNEKEEPER_REQUIRE_POSTGRES=1 turns that into a failure.

A fresh database is a copy of a template migrated once per session (CREATE DATABASE ... TEMPLATE), which
costs a few milliseconds instead of a full migration per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import port_for
import psycopg
import pytest
from psycopg import sql
from pytest_postgresql.executors import PostgreSQLExecutor
from sqlalchemy.engine import URL, make_url

from tunekeeper.db.migrate import upgrade

URL_ENV = "TUNEKEEPER_TEST_POSTGRES_URL"
REQUIRE_ENV = "TUNEKEEPER_REQUIRE_POSTGRES"
LOCAL_HOST, LOCAL_PORT, LOCAL_USER = "127.0.0.1", 5432, "postgres"
LOCAL_ADMIN_DATABASES = ("test", "postgres")
# fsync and friends off: a throwaway server's data need not survive a crash, and tests run much faster
THROWAWAY_OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"

T = TypeVar("T")
_database_numbers = itertools.count(1)


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when PostgreSQL is required."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"PostgreSQL is required ({REQUIRE_ENV}=1) but {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL: {reason}")


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous fixture code, on its own loop in its own thread.

    A fixture must not start or replace the event loop of the thread that pytest-asyncio runs tests in.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


@dataclass
class PostgresServer:
    """A server the tests may use: connection details, fresh databases, and (when ours) a restart."""

    host: str
    port: int
    user: str
    password: str | None
    admin_database: str
    description: str
    executor: PostgreSQLExecutor | None = None
    workdir: Path | None = None  # removed at close, when we created it
    _template: str | None = field(default=None, repr=False)
    _databases: set[str] = field(default_factory=set, repr=False)

    @property
    def restartable(self) -> bool:
        """True when the tests own this server, so that restarting it disturbs nobody else."""
        return self.executor is not None

    def url(self, database: str) -> str:
        """The SQLAlchemy url of `database`, as tunekeeper's settings take it."""
        return self._url("postgresql+asyncpg", database)

    def dsn(self, database: str) -> str:
        """A libpq url of `database`, for psql and psycopg."""
        return self._url("postgresql", database)

    def _url(self, driver: str, database: str) -> str:
        url = URL.create(driver, self.user, self.password, self.host, self.port, database)
        return url.render_as_string(hide_password=False)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn(self.admin_database), autocommit=True, connect_timeout=10)

    def create_database(self, *, migrated: bool = True) -> str:
        """A new database, migrated to head (a copy of the session's template) or empty; returns its name."""
        template = self._migrated_template() if migrated else "template0"
        name = f"test_tunekeeper_{os.getpid()}_{next(_database_numbers)}"
        with self.admin() as connection:
            connection.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
            )
        self._databases.add(name)
        return name

    def drop_database(self, name: str) -> None:
        # FORCE: a test that failed half-way may have left connections open
        with self.admin() as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self._databases.discard(name)

    def _migrated_template(self) -> str:
        if self._template is None:
            if self.host == LOCAL_HOST:
                self._drop_leftovers()
            name = f"tunekeeper_template_{os.getpid()}"
            with self.admin() as connection:
                connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                connection.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
            self._databases.add(name)
            run_async(lambda: upgrade(self.url(name)))  # its connections are closed when it returns
            self._template = name
        return self._template

    def _drop_leftovers(self) -> None:
        """Drop the databases of test sessions on this host that were killed before they could clean up."""
        with self.admin() as connection:
            names = [
                row[0]
                for row in connection.execute(
                    "SELECT datname FROM pg_database"
                    " WHERE datname ~ '^tunekeeper_template_[0-9]+$' OR datname ~ '^test_tunekeeper_[0-9]+_[0-9]+$'"
                )
            ]
        for name in names:
            if not _process_exists(int(re.findall(r"\d+", name)[0])):
                with contextlib.suppress(psycopg.Error):
                    self.drop_database(name)

    def restart(self) -> None:
        """Stop the server (fast shutdown: every connection is cut) and start it again on the same port."""
        self.stop()
        self.start()

    def stop(self) -> None:
        self._own_executor().stop()

    def start(self) -> None:
        self._own_executor().start()
        self.wait_until_ready()

    def wait_until_ready(self, within: float = 60.0) -> None:
        """The executor returns once the port is open; the server may still refuse while it starts up."""
        deadline = time.monotonic() + within
        while True:
            try:
                self.admin().close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _own_executor(self) -> PostgreSQLExecutor:
        if self.executor is None:
            raise RuntimeError(f"{self.description} is not ours to stop or start")
        return self.executor

    def close(self) -> None:
        if self.executor is not None:
            self.executor.stop()
        else:
            for name in sorted(self._databases):
                with contextlib.suppress(psycopg.Error):
                    self.drop_database(name)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, and belongs to another user
    return True


def find_server(tmp_path_factory: pytest.TempPathFactory) -> PostgresServer:
    """The server the tests use, in DESIGN.md's order; skips (or fails) when there is none."""
    named = os.environ.get(URL_ENV)
    if named:
        return _named_server(named)
    local = _local_server()
    if local is not None:
        return local
    if _find_pg_ctl() is None:
        unavailable(f"{URL_ENV} is not set, nothing answers on {LOCAL_HOST}:{LOCAL_PORT}, and there is no pg_ctl")
    return start_throwaway(tmp_path_factory)


def _named_server(named: str) -> PostgresServer:
    url = make_url(named)
    server = PostgresServer(
        host=url.host or LOCAL_HOST,
        port=url.port or LOCAL_PORT,
        user=url.username or LOCAL_USER,
        password=url.password if isinstance(url.password, str) else None,
        admin_database=url.database or "postgres",
        description=f"{URL_ENV} ({url.render_as_string(hide_password=True)})",
    )
    try:
        server.admin().close()
    except psycopg.Error as exc:
        error = _one_line(exc)
    else:
        return server
    unavailable(f"{URL_ENV} names a server that does not answer: {error}")


def _local_server() -> PostgresServer | None:
    for database in LOCAL_ADMIN_DATABASES:
        server = PostgresServer(
            host=LOCAL_HOST,
            port=LOCAL_PORT,
            user=LOCAL_USER,
            password=None,
            admin_database=database,
            description=f"the server on {LOCAL_HOST}:{LOCAL_PORT}",
        )
        try:
            with psycopg.connect(server.dsn(database), connect_timeout=3):
                return server
        except psycopg.OperationalError:
            continue
    return None


def _find_pg_ctl() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda path: int(path.split("/")[4]))
    return candidates[-1] if candidates else None


def start_throwaway(tmp_path_factory: pytest.TempPathFactory) -> PostgresServer:
    """A server of our own on a free loopback port, its data in a temporary directory."""
    pg_ctl = _find_pg_ctl()
    if pg_ctl is None:
        unavailable("no pg_ctl to start a PostgreSQL server of our own")
    if os.geteuid() == 0:
        workdir, executable = _as_postgres_user(pg_ctl)
    else:
        workdir, executable = tmp_path_factory.mktemp("postgres"), pg_ctl
    port = port_for.select_random()
    executor = PostgreSQLExecutor(
        executable=executable,
        host=LOCAL_HOST,
        port=port,
        datadir=str(workdir / "data"),
        unixsocketdir=str(workdir),
        logfile=str(workdir / "postgresql.log"),
        startparams="-w",
        dbname="postgres",
        user=LOCAL_USER,
        postgres_options=f"-c listen_addresses={LOCAL_HOST} {THROWAWAY_OPTIONS}",
    )
    server = PostgresServer(
        host=LOCAL_HOST,
        port=port,
        user=LOCAL_USER,
        password=None,
        admin_database="postgres",
        description=f"a throwaway server on {LOCAL_HOST}:{port}",
        executor=executor,
        workdir=workdir,
    )
    try:
        server.start()
    except Exception as exc:
        error = _one_line(exc)
    else:
        return server
    with contextlib.suppress(Exception):
        executor.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    unavailable(f"could not start a PostgreSQL server with {pg_ctl}: {error}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _as_postgres_user(pg_ctl: str) -> tuple[Path, str]:
    """initdb and pg_ctl refuse to run as root: run them as the `postgres` user through a small wrapper.

    pytest's temporary directories are private to root, so the server's directory is made in /tmp instead.
    """
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        unavailable("pg_ctl cannot run as root, and there is no 'postgres' user to run it as")
    if shutil.which("setpriv") is None:
        unavailable("pg_ctl cannot run as root, and there is no setpriv to run it as 'postgres'")
    workdir = Path(tempfile.mkdtemp(prefix="tunekeeper-postgres-"))
    os.chown(workdir, account.pw_uid, account.pw_gid)
    wrapper = workdir / "pg_ctl"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"cd '{workdir}' || exit 1\n"
        f"exec setpriv --reuid={account.pw_uid} --regid={account.pw_gid} --init-groups -- '{pg_ctl}' \"$@\"\n"
    )
    wrapper.chmod(stat.S_IRWXU)
    return workdir, str(wrapper)
