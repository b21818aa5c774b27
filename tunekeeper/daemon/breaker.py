"""The dispatch breaker: while the service fails as a whole, stop sending it jobs, so that no job spends its
attempts on the service's trouble.

Two reasons pause dispatching:

- `service_unavailable`: `daemon.breaker_failures` creates in a row failed for the service's sake (5xx, no
  answer, a garbled one; not a 429, which is the service saying "not now" and costs no attempt anyway). After
  `daemon.breaker_min_wait` one job is let through as the probe (half-open): an answer closes the breaker, a
  failure opens it again for twice as long, up to `daemon.breaker_max_wait`.
- `credentials`: the service refused the key (401/403) and a cheap read with the same key was refused too. It
  opens at once; after the wait the dispatcher checks the key with that read again (no job is sent for it).

A failure that opens the breaker, or arrives while it is open or probing, costs its job no attempt: the job is
requeued as it was. `hold()` tells the dispatcher how long to wait before its next claim; `room()` narrows a
half-open claim to the one probe.

Written here rather than taken from a library: aiobreaker and purgatory wrap each call and raise when open,
with a fixed reset time, while the dispatcher must not even claim a job while open (a claim takes an attempt),
must know when the probe falls due to sleep until then, doubles the wait after each failed probe, and opens for
two reasons with different probes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from tunekeeper.config import DaemonSettings
from tunekeeper.daemon.metrics import Metrics
from tunekeeper.logs import get_logger

# While a probe is in flight the dispatcher claims nothing; its end nudges the dispatcher, and this is the
# safety net's wait in between.
PROBE_WAIT = 5.0

log = get_logger(__name__)


class PauseReason(StrEnum):
    SERVICE_UNAVAILABLE = "service_unavailable"
    CREDENTIALS = "credentials"


class DispatchBreaker:
    def __init__(
        self,
        metrics: Metrics,
        settings: Callable[[], DaemonSettings],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._settings = settings
        self._clock = clock
        self.reason: PauseReason | None = None  # None: closed
        self._failures = 0  # consecutive service failures while closed
        self._opens = 0  # openings since the last close: the wait doubles with each
        self._resume_at = 0.0  # clock() when the next probe falls due
        self._paused_at = 0.0
        self._probing = False

    @property
    def paused(self) -> bool:
        return self.reason is not None

    def paused_for(self, reason: PauseReason) -> bool:
        return self.reason == reason

    def hold(self) -> float | None:
        """Seconds to wait before the next claim; None: claim now (closed, or the probe is due)."""
        if self.reason is None:
            return None
        if self._probing:
            return PROBE_WAIT
        remaining = self._resume_at - self._clock()
        return remaining if remaining > 0 else None

    def probe_due(self) -> bool:
        return self.reason is not None and not self._probing and self._clock() >= self._resume_at

    def room(self, free: int) -> int:
        """How many jobs the next claim may take: one, as the probe, while a service outage is being probed."""
        return 1 if self.reason == PauseReason.SERVICE_UNAVAILABLE else free

    def probing(self, started: bool) -> None:
        """A probe (a claimed job, or a check of the key) is under way, or none is after all."""
        self._probing = started

    def answered(self) -> None:
        """The service answered (a job accepted or refused on its merits, the key accepted): all is well."""
        self._failures = 0
        self._probing = False
        if self.reason is not None:
            log.info(
                "dispatch_resumed",
                reason=self.reason.value,
                paused_seconds=round(self._clock() - self._paused_at, 3),
            )
            self._metrics.dispatch_paused(self.reason.value, False)
            self.reason = None
            self._opens = 0

    def service_failed(self, error: object) -> bool:
        """A create failed for the service's sake. True when its job should not be charged an attempt: this
        failure opened the breaker, or came while it was open or probing."""
        if self.reason is not None:
            if self.reason == PauseReason.SERVICE_UNAVAILABLE:  # the probe failed (or a late create: no change)
                self._open(PauseReason.SERVICE_UNAVAILABLE, error)
            return True
        self._failures += 1
        if self._failures < self._settings().breaker_failures:
            return False
        self._open(PauseReason.SERVICE_UNAVAILABLE, error)
        return True

    def credentials_refused(self, error: object) -> None:
        """The key was refused, and a check of it too: pause until a check passes."""
        self._open(PauseReason.CREDENTIALS, error)

    def _open(self, reason: PauseReason, error: object) -> None:
        settings = self._settings()
        now = self._clock()
        if self.reason is None:
            self._paused_at = now
            self._metrics.dispatch_paused(reason.value, True)
        elif self.reason != reason:
            self._metrics.dispatch_paused(self.reason.value, False)
            self._metrics.dispatch_paused(reason.value, True)
        elif not self._probing and now < self._resume_at:
            return  # already open: a failure of a create sent before the opening changes nothing
        wait = min(settings.breaker_max_wait, settings.breaker_min_wait * 2.0 ** min(self._opens, 32))
        if self.reason is None:
            log.warning("dispatch_paused", reason=reason.value, error=str(error), retry_in=round(wait, 3))
        else:
            log.warning("dispatch_probe_failed", reason=reason.value, error=str(error), retry_in=round(wait, 3))
        self.reason = reason
        self._opens += 1
        self._failures = 0
        self._probing = False
        self._resume_at = now + wait
