"""Column types that behave the same on SQLite and PostgreSQL, and the boundary every value crosses.

Reading: a value a producer's plain SQL left in a form the daemon cannot use (an unparseable timestamp, JSON
nested deeper than MAX_JSON_DEPTH, text that is not UTF-8) loads as `UNREADABLE` rather than raising, so that
one row never stops a query that returns many; `records.Job.from_row` names the column and the store rejects
that row alone.

Writing: what the service hands back may hold values the database refuses (PostgreSQL's `jsonb` and `text` take
no U+0000, `jsonb` no NaN; SQLite would store NaN as text that is not JSON). Every value the store writes passes
through `storable` here, once: non-finite numbers become null, NULs are dropped, lone surrogates replaced.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

# SQLite has no date type: timestamps are text in one fixed, sortable form so that SQL comparisons work, and
# a producer's CURRENT_TIMESTAMP ('YYYY-MM-DD HH:MM:SS') sorts correctly against it.
_SQLITE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

MAX_JSON_DEPTH: Final = 64
"""Nesting the daemon reads in a JSON column. Its own documents are at most 6 deep (a Vertex AI conversation);
anything near Python's recursion limit would crash whatever touches it next (parsing, rendering, dumping)."""


class Unreadable:
    """What a column holds when its value cannot be loaded: the column is named, the value never shown."""

    _instance: Unreadable | None = None

    def __new__(cls) -> Unreadable:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unreadable>"


UNREADABLE: Final = Unreadable()


# ---- reading ------------------------------------------------------------------------------------------------


def decode_text(raw: bytes) -> str:
    """SQLite's text_factory: text that is not UTF-8 keeps its bytes as lone surrogates instead of failing the
    whole query (the driver's default raises, which reads like a lost database); `has_surrogates` finds it."""
    return raw.decode("utf-8", "surrogateescape")


def has_surrogates(text: str) -> bool:
    """Whether `text` holds a lone surrogate: bytes that were not UTF-8 (see decode_text)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def load_json(text: str) -> Any:
    """JSON from the database, or UNREADABLE: invalid, deeper than MAX_JSON_DEPTH, or (SQLite) not UTF-8."""
    if has_surrogates(text):
        return UNREADABLE
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return UNREADABLE
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return value  # too few brackets to nest that deep: spare the walk
    return value if _depth_within(value, MAX_JSON_DEPTH) else UNREADABLE


_CONTAINERS: Final = (list, dict)


def _depth_within(value: Any, limit: int) -> bool:
    """Whether `value` nests at most `limit` containers deep: a level at a time, without recursion (json.loads
    makes only exact lists and dicts, so `type() in` is enough; this runs over every large document read)."""
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return False
        below: list[Any] = []
        for container in level:
            children = container.values() if type(container) is dict else container
            below += [child for child in children if type(child) in _CONTAINERS]
        level = below
    return True


def parse_timestamp(value: Any) -> datetime | Unreadable | None:
    """A column's timestamp as an aware UTC datetime; UNREADABLE where it is not one."""
    if value is None:
        return None
    if isinstance(value, str):
        # Producers may write ISO 8601 with 'T', 'Z' or an offset (SQLite's CHECK keeps out the rest).
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return UNREADABLE
    if not isinstance(value, datetime):
        return UNREADABLE
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---- writing ------------------------------------------------------------------------------------------------


def storable(value: Any) -> Any:
    """`value` as the database takes it: non-finite floats as None, strings without NULs, lone surrogates as "?",
    recursively through lists and dicts (keys too). Values that need no change are returned as they are."""
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_storable_text(str(key)): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def _storable_text(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "")
    if has_surrogates(text):
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def dump_json(value: Any) -> str:
    """The engines' JSON serializer: what `storable` makes of `value`, as strict JSON (no NaN)."""
    return json.dumps(storable(value), allow_nan=False)


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

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return parse_timestamp(value)


class StoredText(sa.TypeDecorator[str]):
    """Text the database always takes: NULs dropped, lone surrogates replaced (see `storable`)."""

    impl = sa.Text()
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return storable(value)


class StoredFloat(sa.TypeDecorator[float]):
    """A float column: NaN and infinities are stored as null (PostgreSQL takes them, SQLite makes them null,
    and neither says anything a reader could use)."""

    impl = sa.Float()
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return storable(value)


class StoredJSON(sa.TypeDecorator[Any]):
    """JSON text on SQLite (validity enforced by a CHECK), jsonb on PostgreSQL; written through `storable`,
    read through the engine's `load_json`."""

    impl = sa.JSON()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(sa.JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return storable(value)


def json_document() -> sa.types.TypeEngine[Any]:
    return StoredJSON()
