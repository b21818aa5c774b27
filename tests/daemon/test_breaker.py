"""The dispatch breaker's rules, on a clock the test moves: when it opens, what it charges, how long it waits."""

from __future__ import annotations

from tunekeeper.config import DaemonSettings
from tunekeeper.daemon.breaker import PROBE_WAIT, DispatchBreaker, PauseReason
from tunekeeper.daemon.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, metrics: Metrics | None = None) -> DispatchBreaker:
    settings = DaemonSettings(breaker_failures=3, breaker_min_wait=10, breaker_max_wait=25)
    return DispatchBreaker(metrics or Metrics(process_metrics=False), lambda: settings, clock=clock)


def paused_gauge(metrics: Metrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value("tunekeeper_dispatch_paused", {"reason": reason})


def test_failures_in_a_row_open_it_and_only_those_before_are_charged() -> None:
    clock = Clock()
    metrics = Metrics(process_metrics=False)
    breaker = make(clock, metrics)
    assert [breaker.service_failed("503") for _ in range(2)] == [False, False]  # charged: not yet an outage
    breaker.answered()  # a success in between: the count starts again
    assert [breaker.service_failed("503") for _ in range(3)] == [False, False, True]
    assert breaker.paused_for(PauseReason.SERVICE_UNAVAILABLE)
    assert paused_gauge(metrics, "service_unavailable") == 1.0
    assert breaker.service_failed("a create sent before the opening") is True  # spared, and changes nothing
    assert breaker.hold() == 10.0


def test_the_probe_is_one_job_and_each_failed_probe_doubles_the_wait_up_to_the_cap() -> None:
    clock = Clock()
    breaker = make(clock)
    for _ in range(3):
        breaker.service_failed("503")
    waits = []
    for _ in range(3):
        clock.now += breaker.hold() or 0.0
        assert breaker.hold() is None and breaker.probe_due() and breaker.room(8) == 1
        breaker.probing(True)
        assert breaker.hold() == PROBE_WAIT  # nothing else is claimed while the probe is out
        assert breaker.service_failed("503 again") is True  # the probe's job is not charged
        waits.append(breaker.hold())
    assert waits == [20.0, 25.0, 25.0]
    clock.now += 25.0
    breaker.probing(True)
    breaker.answered()
    assert not breaker.paused and breaker.hold() is None and breaker.room(8) == 8
    for _ in range(3):
        breaker.service_failed("503")
    assert breaker.hold() == 10.0  # a new outage starts from the shortest wait


def test_a_refused_key_pauses_at_once_until_answered() -> None:
    clock = Clock()
    metrics = Metrics(process_metrics=False)
    breaker = make(clock, metrics)
    breaker.credentials_refused("PERMISSION_DENIED (403)")
    assert breaker.paused_for(PauseReason.CREDENTIALS) and not breaker.paused_for(PauseReason.SERVICE_UNAVAILABLE)
    assert breaker.room(8) == 8  # the key's probe is a read, not a job
    assert breaker.service_failed("503") is True  # spared while paused, and the reason stays the key
    assert breaker.paused_for(PauseReason.CREDENTIALS)
    clock.now += 10.0
    breaker.probing(True)
    breaker.credentials_refused("still refused")
    assert breaker.hold() == 20.0
    breaker.answered()
    assert not breaker.paused
    assert paused_gauge(metrics, "credentials") == 0.0
    assert metrics.registry.get_sample_value("tunekeeper_dispatch_pauses_total", {"reason": "credentials"}) == 1.0
