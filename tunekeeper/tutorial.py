"""The dataset of Google's model-tuning tutorial: numbers, in digits and in words, and the number that follows.

The demo tunes on it; the tests use it as the canonical valid dataset, since the service accepted it live.
"""

from __future__ import annotations

NUMBER_PAIRS: tuple[tuple[str, str], ...] = (
    ("1", "2"),
    ("3", "4"),
    ("-3", "-2"),
    ("twenty two", "twenty three"),
    ("two hundred", "two hundred one"),
    ("ninety nine", "one hundred"),
    ("8", "9"),
    ("-98", "-97"),
    ("1,000", "1,001"),
    ("10,100,000", "10,100,001"),
    ("thirteen", "fourteen"),
    ("eighty", "eighty one"),
    ("one", "two"),
    ("three", "four"),
    ("seven", "eight"),
)
"""The tutorial's 15 (input, output) pairs, in its order."""
