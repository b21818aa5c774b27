"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

# SQLite has no date type: timestamps are text in one fixed, sortable form so that SQL comparisons work, and
# a producer's CURRENT_TIMESTAMP ('YYYY-MM-DD HH:MM:SS') sorts correctly against it.
_SQLITE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime: `timestamptz` on PostgreSQL, fixed-format text on SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(32))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        if dialect.name == "sqlite":
            return value.astimezone(UTC).strftime(_SQLITE_FORMAT)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            # Producers may write ISO 8601 with 'T', 'Z' or an offset; the CHECK constraint guarantees it parses.
            value = datetime.fromisoformat(value)
        if not isinstance(value, datetime):
            raise ValueError(f"not a timestamp: {value!r}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_document() -> sa.types.TypeEngine[Any]:
    """JSON text on SQLite (validity enforced by a CHECK), jsonb on PostgreSQL."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
