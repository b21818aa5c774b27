"""Lenient request bodies (trailing commas, snake_case) and the command line's value parsers."""

from __future__ import annotations

import json

import pytest

from tests.emulator.conftest import TUTORIAL_PAIRS, tutorial_body
from tunekeeper.emulator import parse_faults, parse_latency
from tunekeeper.emulator.config import parse_duration
from tunekeeper.emulator.errors import ApiError
from tunekeeper.emulator.jsonbody import parse_body, strip_trailing_commas


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1,}', {"a": 1}),
        ('{"a": [1, 2, ], }', {"a": [1, 2]}),
        ('{"a": {"b": "c",\n  },\n}', {"a": {"b": "c"}}),
        ('{"a": "x,}", }', {"a": "x,}"}),
        ('{"a": "say \\",}\\" twice",}', {"a": 'say ",}" twice'}),
        ('{"a": "back\\\\",}', {"a": "back\\"}),
        ('["]", ",]",]', ["]", ",]"]),
        ('{"a": 1}', {"a": 1}),
    ],
)
def test_trailing_commas_are_dropped_outside_strings(text: str, expected: object) -> None:
    assert json.loads(strip_trailing_commas(text)) == expected


@pytest.mark.parametrize("text", ["{,}", "[1,,]", "[,]", '{"a": 1,,}', '{"a" 1}', "{"])
def test_other_malformed_json_stays_malformed(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_body(text.encode())
    assert caught.value.status == "INVALID_ARGUMENT"
    assert caught.value.message.startswith("Invalid JSON payload received.")


def test_tutorial_body_parses_to_camel_case() -> None:
    body = parse_body(tutorial_body())
    assert body["displayName"] == "number generator model"
    assert body["tuningTask"]["hyperparameters"] == {"batchSize": 2, "learningRate": 0.001, "epochCount": 5}
    examples = body["tuningTask"]["trainingData"]["examples"]["examples"]
    assert [(e["textInput"], e["output"]) for e in examples] == TUTORIAL_PAIRS


def test_keys_are_camelized_at_every_level_but_values_are_not() -> None:
    body = parse_body(b'{"a_b": [{"c_d": {"e_f_g": "h_i"}}], "@type": "x", "alreadyCamel": 1}')
    assert body == {"aB": [{"cD": {"eFG": "h_i"}}], "@type": "x", "alreadyCamel": 1}


@pytest.mark.parametrize("raw", [b'{"text_input": "a", "textInput": "b"}', b'{"x": NaN}', b'"text"', b"\xff\xfe"])
def test_bodies_the_service_rejects(raw: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        parse_body(raw)
    assert caught.value.http_code == 400


def test_empty_body_is_an_empty_object() -> None:
    assert parse_body(b"") == {}
    assert parse_body(b"  \n") == {}


def test_parse_faults() -> None:
    assert parse_faults("429=0.1,503=0.05") == {"429": 0.1, "503": 0.05}
    assert parse_faults(" drop-after = 0.5 , ") == {"drop-after": 0.5}
    assert parse_faults("") == {}
    for bad in ("429", "429=x", "404=0.1", "429=0.7,503=0.7", "500=-0.1"):
        with pytest.raises(ValueError):  # noqa: PT011 - the messages are checked in test_faults
            parse_faults(bad)


def test_parse_latency_and_durations() -> None:
    assert parse_latency("5ms..50ms") == (0.005, 0.05)
    assert parse_latency("0.1..0.2s") == (0.1, 0.2)
    assert parse_latency("20ms") == (0.02, 0.02)
    assert parse_latency("none") is None
    assert parse_duration("500us") == pytest.approx(0.0005)
    assert parse_duration("2") == 2.0
    for bad in ("50ms..5ms", "fast", "5m"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_latency(bad)
