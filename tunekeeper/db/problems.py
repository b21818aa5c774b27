"""Why a database could not be opened, in one line an operator can act on.

The message names the database (a SQLite path, or PostgreSQL's host, port, database and user: never a
password) and the problem; `lasting` tells a problem that a restart will not cure (a missing database, role,
directory, a file that is not SQLite) from one it may (a server that does not answer yet).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from tunekeeper.logs import first_line

# PostgreSQL's SQLSTATE classes and codes that a restart will not cure
_NO_DATABASE = "3D000"  # invalid_catalog_name
_AUTHORIZATION_CLASS = "28"  # invalid_authorization_specification, invalid_password: role, password, pg_hba
_SQLITE_LASTING = {
    "SQLITE_NOTADB": "is not a SQLite database file",
    "SQLITE_CORRUPT": "is damaged (SQLite reports corruption)",
    "SQLITE_PERM": "cannot be opened: permission denied",
    "SQLITE_READONLY": "cannot be written to (read-only)",
    "SQLITE_CANTOPEN": "cannot be opened",
}


@dataclass(frozen=True)
class DatabaseProblem:
    message: str
    lasting: bool


def database_problem(url: str, error: BaseException) -> DatabaseProblem:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_problem(Path(parsed.database or ""), error)
    return _postgres_problem(parsed, error)


def _sqlite_problem(path: Path, error: BaseException) -> DatabaseProblem:
    where = f"database: {path}"
    if not path.parent.is_dir():
        return DatabaseProblem(f"{where} cannot be opened: directory {path.parent} does not exist", lasting=True)
    cause = _cause(error)
    if isinstance(cause, PermissionError):
        return DatabaseProblem(f"{where} cannot be opened: permission denied ({cause.filename})", lasting=True)
    if isinstance(cause, sqlite3.Error):
        said = _SQLITE_LASTING.get(getattr(cause, "sqlite_errorname", ""))
        if said is not None:
            return DatabaseProblem(f"{where} {said}", lasting=True)
    return DatabaseProblem(f"{where}: {first_line(cause)}", lasting=False)


def _postgres_problem(url: URL, error: BaseException) -> DatabaseProblem:
    where = f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}"
    cause = _cause(error)
    sqlstate = str(getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None) or "")
    if sqlstate == _NO_DATABASE:
        return DatabaseProblem(f"database: {where} has no database {url.database!r}", lasting=True)
    if sqlstate.startswith(_AUTHORIZATION_CLASS):
        return DatabaseProblem(f"database: {where} refused user {url.username!r}: {first_line(cause)}", lasting=True)
    if isinstance(cause, OSError | TimeoutError):
        return DatabaseProblem(f"database: cannot reach {where}: {_os_reason(cause)}", lasting=False)
    return DatabaseProblem(f"database: {where}, database {url.database!r}: {first_line(cause)}", lasting=False)


def _cause(error: BaseException) -> BaseException:
    """The driver's own error under SQLAlchemy's wrapper."""
    if isinstance(error, sa.exc.DBAPIError) and error.orig is not None:
        return error.orig
    return error


def _os_reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return first_line(error)
