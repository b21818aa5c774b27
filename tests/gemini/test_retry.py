"""Backoff delays: full jitter under an exponential, capped ceiling; server hints as a bounded lower limit."""

from __future__ import annotations

import random

import pytest

from tunekeeper.backends.googleapi.retry import HINT_CAP_FACTOR, HINT_SPREAD, RetryPolicy, backoff_delay

POLICY = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=8.0)


class FixedRandom(random.Random):
    """uniform() returns a fixed fraction of its range, to see the edges of the jitter."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0)])
def test_ceiling_doubles_per_attempt_up_to_max_delay(attempt: int, ceiling: float) -> None:
    assert backoff_delay(attempt, POLICY, FixedRandom(1.0)) == pytest.approx(ceiling)
    assert backoff_delay(attempt, POLICY, FixedRandom(0.0)) == 0.0


def test_full_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(42)
    delays = [backoff_delay(3, POLICY, rng) for _ in range(2000)]
    assert all(0.0 <= delay <= 2.0 for delay in delays)
    assert min(delays) < 0.2
    assert max(delays) > 1.8


def test_huge_attempt_numbers_stay_capped() -> None:
    assert backoff_delay(10_000, POLICY, FixedRandom(1.0)) == POLICY.max_delay


def test_hint_is_a_lower_bound() -> None:
    delay = backoff_delay(1, POLICY, FixedRandom(0.0), hint=5.0)
    assert delay == 5.0
    spread = backoff_delay(1, POLICY, FixedRandom(1.0), hint=5.0)
    assert spread == pytest.approx(5.0 * (1 + HINT_SPREAD))


def test_backoff_wins_over_a_smaller_hint() -> None:
    assert backoff_delay(5, POLICY, FixedRandom(1.0), hint=0.1) == pytest.approx(8.0)


def test_hostile_hint_is_capped() -> None:
    delay = backoff_delay(1, POLICY, FixedRandom(0.0), hint=86_400.0)
    assert delay == POLICY.max_delay * HINT_CAP_FACTOR


@pytest.mark.parametrize("hint", [0.0, -3.0, None])
def test_empty_hints_are_ignored(hint: float | None) -> None:
    assert backoff_delay(1, POLICY, FixedRandom(0.5), hint=hint) == pytest.approx(0.25)


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        backoff_delay(0, POLICY, random.Random(0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"base_delay": 0.0}, "base_delay"),
        ({"base_delay": 2.0, "max_delay": 1.0}, "max_delay"),
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
