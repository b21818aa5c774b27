"""Deterministic tuned-model ids: always valid for the service, always ending in the job id."""

from __future__ import annotations

import random
import re

import pytest

from tunekeeper.backends.gemini.types import TUNED_MODEL_ID_PATTERN
from tunekeeper.naming import tuned_model_id

SERVICE_ID = re.compile(TUNED_MODEL_ID_PATTERN)


def fullwidth(text: str) -> str:
    """The same ASCII text in fullwidth forms, which NFKD maps back to ASCII."""
    return "".join(chr(ord(char) + 0xFEE0) for char in text)


@pytest.mark.parametrize(
    ("display_name", "job_id", "prefix", "expected"),
    [
        ("number generator", 42, "", "number-generator-42"),
        ("number generator", 42, "tk-", "tk-number-generator-42"),
        ("Number  Generator!!", 7, "", "number-generator-7"),
        ("  --number__generator--  ", 7, "", "number-generator-7"),
        ("Café Crème", 3, "", "cafe-creme-3"),
        (fullwidth("Fullwidth") + " \u2460", 3, "", "fullwidth-1-3"),  # circled digit one
        ("", 42, "", "job-42"),
        ("   ", 42, "", "job-42"),
        ("日本語のモデル", 5, "", "job-5"),
        ("", 5, "tk-", "tk-job-5"),
        ("42 things", 9, "", "job-42-things-9"),
        ("-1", 9, "", "job-1-9"),
        ("a" * 50, 1, "", "a" * 38 + "-1"),
        ("a" * 50, 10**12, "", "a" * 26 + "-1000000000000"),
        ("a" * 50, 10**12, "p" * 20, "p" * 20 + "a" * 6 + "-1000000000000"),
        # Truncation never leaves a '-' before the job id's own '-'.
        ("a" * 37 + " b", 5, "", "a" * 37 + "-5"),
        ("abc def", 1, "x", "xabc-def-1"),
    ],
)
def test_examples(display_name: str, job_id: int, prefix: str, expected: str) -> None:
    result = tuned_model_id(display_name, job_id, prefix)
    assert result == expected
    assert SERVICE_ID.fullmatch(result)


def test_deterministic() -> None:
    assert tuned_model_id("number generator", 42) == tuned_model_id("number generator", 42)


@pytest.mark.parametrize(
    ("job_id", "prefix"),
    [(0, ""), (-1, ""), (True, ""), (1, "Tk-"), (1, "1tk"), (1, "-"), (1, "t" * 21), (1, "tk_")],
)
def test_rejects_bad_arguments(job_id: int, prefix: str) -> None:
    with pytest.raises(ValueError, match=r"job_id|prefix"):
        tuned_model_id("name", job_id, prefix)


def random_display_name(rng: random.Random) -> str:
    alphabets = [
        "abcdefghijklmnopqrstuvwxyz",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        " -_.,!?/\\\t\n'\"",
        "éèêëàâäöüçñßøåÆŒĳﬁ",
        "日本語中文한국어العربيةрусский",
        "\u2460\u2461\u216b" + fullwidth("&AB12"),
        "\u0301\u200b\ufeff\x00\U0001f600",
    ]
    length = rng.choice([0, 1, 2, 5, 20, 40, 80, 300])
    return "".join(rng.choice(rng.choice(alphabets)) for _ in range(length))


def random_prefix(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return ""
    rest = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-") for _ in range(rng.randint(0, 19)))
    return rng.choice("abcdefghijklmnopqrstuvwxyz") + rest


def random_job_id(rng: random.Random) -> int:
    return rng.choice([1, 9, 10, 99, 10**12, 10**12 - 1, rng.randint(1, 10**12), rng.randint(1, 1000)])


def test_property_valid_and_ends_with_job_id() -> None:
    rng = random.Random(1234)
    for _ in range(5000):
        display_name, job_id, prefix = random_display_name(rng), random_job_id(rng), random_prefix(rng)
        result = tuned_model_id(display_name, job_id, prefix)
        assert SERVICE_ID.fullmatch(result), (display_name, job_id, prefix, result)
        assert len(result) <= 40
        assert result.endswith(f"-{job_id}")
        assert result.startswith(prefix)


def test_property_distinct_job_ids_give_distinct_ids() -> None:
    # Names chosen to tempt collisions: truncation at every length, digits and dashes near the cut.
    rng = random.Random(5678)
    names = ["a" * n + tail for n in range(20, 40) for tail in ("", "-1", " 1", "-12", "1")]
    names += [random_display_name(rng) for _ in range(200)]
    prefixes = ["", "tk-", "p" * 20, "a1-"]
    job_ids = [1, 2, 5, 11, 12, 15, 21, 112, 121, 10**11, 10**12] + [rng.randint(1, 10**12) for _ in range(20)]
    for prefix in prefixes:
        owner: dict[str, int] = {}
        for name in names:
            for job_id in job_ids:
                result = tuned_model_id(name, job_id, prefix)
                assert owner.setdefault(result, job_id) == job_id, (result, name, job_id, prefix)
