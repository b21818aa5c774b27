"""The boundary every value crosses: what the database hands back is loaded without ever raising, and what the
store writes is made storable."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from tunekeeper.db.types import MAX_JSON_DEPTH, UNREADABLE, decode_text, dump_json, load_json, parse_timestamp


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 900, 1_500, 5_000, 100_000])
def test_json_nested_too_deep_loads_as_unreadable_without_recursion_error(depth: int) -> None:
    assert load_json(nested(depth)) is UNREADABLE
    assert load_json(f'{{"a": [1, {nested(depth)}]}}') is UNREADABLE


def test_json_within_the_depth_loads_as_itself() -> None:
    assert load_json(nested(MAX_JSON_DEPTH)) == json.loads(nested(MAX_JSON_DEPTH))
    pairs = [{"text_input": str(n), "output": "[{" * 40} for n in range(200)]  # brackets in strings don't nest
    assert load_json(json.dumps(pairs)) == pairs


@pytest.mark.parametrize("text", ["[1,", "", "{'a': 1}", decode_text(b'["\xff"]')])
def test_json_that_is_not_json_or_not_utf8_loads_as_unreadable(text: str) -> None:
    assert load_json(text) is UNREADABLE


@pytest.mark.parametrize("text", ["soon", "2030-13-45", "", "2030-01-01junk"])
def test_a_timestamp_that_is_not_one_loads_as_unreadable(text: str) -> None:
    assert parse_timestamp(text) is UNREADABLE
    assert parse_timestamp("2030-01-02T05:04:05+02:00") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_what_is_written_holds_no_nan_nul_or_lone_surrogate() -> None:
    value = {"loss": math.nan, "k\x00ey": [math.inf, -math.inf, 1.5, "a\x00b", "c\udcffd"], "n": None, "t": True}

    written = dump_json(value)

    assert json.loads(written) == {"loss": None, "key": [None, None, 1.5, "ab", "c?d"], "n": None, "t": True}
    assert "\\u0000" not in written and "NaN" not in written and "Infinity" not in written
