"""Event-loop lag: measured from the loop, reported into Metrics."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.waiting import wait_until
from tunekeeper.daemon.looplag import LoopLagMonitor
from tunekeeper.daemon.metrics import Metrics


async def test_a_blocked_loop_shows_up_as_lag() -> None:
    metrics = Metrics()
    monitor = LoopLagMonitor(metrics, interval=0.01)
    assert monitor.recent_p99 is None
    task = asyncio.create_task(monitor.run())
    try:
        await wait_until(lambda: monitor.measured >= 3, within=5.0, message="first samples")
        measured = monitor.measured
        time.sleep(0.3)  # noqa: ASYNC251 - blocking the event loop is what this test is about
        await wait_until(lambda: monitor.measured > measured, within=5.0, message="a sample after the block")
    finally:
        task.cancel()
    assert monitor.recent_max is not None
    assert monitor.recent_max >= 0.25
    assert monitor.recent_p99 is not None
    assert monitor.recent_p99 >= 0.25
    assert metrics.loop_lag is not None
    assert metrics.loop_lag.recent_p99 >= 0.25


def test_recent_p99_is_the_nearest_rank_of_the_window() -> None:
    monitor = LoopLagMonitor(interval=1.0, window=100)
    for lag in range(200):  # only the last 100 stay in the window
        monitor.record(lag / 1000)
    assert monitor.measured == 200
    assert monitor.last == 0.199
    assert monitor.recent_p99 == 0.198
    monitor.reset()
    assert monitor.recent_p99 is None
    assert monitor.measured == 0


def test_samples_seldom_while_there_is_no_work() -> None:
    work = [1]
    monitor = LoopLagMonitor(interval=1.0, idle_interval=10.0, busy=lambda: bool(work))
    assert monitor.next_pause() == 1.0
    work.clear()
    assert monitor.next_pause() == 10.0
    assert LoopLagMonitor(interval=0.5).next_pause() == 0.5, "busy unless told otherwise"


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="interval"):
        LoopLagMonitor(interval=0)
    with pytest.raises(ValueError, match="idle_interval"):
        LoopLagMonitor(idle_interval=0)
