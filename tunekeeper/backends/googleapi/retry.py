"""How long to wait before retrying a request: exponential backoff with full jitter, capped."""

from __future__ import annotations

import random
from dataclasses import dataclass

# A server's retry hint (RetryInfo, Retry-After) is honoured up to this multiple of max_delay. Real hints are
# quota windows of seconds to a minute, often longer than our own cap (Gemini's 429s say "15s" to "60s" while
# max_delay defaults to 30 s), so capping at max_delay itself would retry into the same throttle. Without any
# cap a buggy or hostile hint ("86400s") would stall the request for a day; 4x bounds that at two minutes.
HINT_CAP_FACTOR = 4.0
# Clients throttled together receive the same hint; spreading retries over hint..hint*(1+HINT_SPREAD) keeps
# them from all returning at the same instant.
HINT_SPREAD = 0.1


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_retries` retries after the first attempt; delays grow from `base_delay` up to `max_delay` seconds."""

    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {self.max_retries}")
        if self.base_delay <= 0:
            raise ValueError(f"base_delay must be > 0, not {self.base_delay}")
        if self.max_delay < self.base_delay:
            raise ValueError(f"max_delay ({self.max_delay}) must be >= base_delay ({self.base_delay})")


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random, hint: float | None = None) -> float:
    """Seconds to sleep before retry number `attempt` (1 for the first retry).

    Full jitter: uniform in [0, min(max_delay, base_delay * 2**(attempt-1))], which spreads competing clients
    best. A server hint is a lower bound, capped at max_delay * HINT_CAP_FACTOR.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts retries from 1, not {attempt}")
    # 2.0 ** attempt overflows a float for huge attempts; long before 64 doublings the cap applies anyway.
    ceiling = policy.max_delay if attempt > 64 else min(policy.max_delay, policy.base_delay * 2.0 ** (attempt - 1))
    delay = rng.uniform(0.0, ceiling)
    if hint is not None and hint > 0:
        floor = min(hint, policy.max_delay * HINT_CAP_FACTOR)
        delay = max(delay, floor + rng.uniform(0.0, floor * HINT_SPREAD))
    return delay
