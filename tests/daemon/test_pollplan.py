"""The poll planner: pure functions, so every test drives a simulated clock."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tunekeeper.daemon.pollplan import PollHistory, PollPolicy, estimate_finish, next_poll_delay, observe

T0 = datetime(2025, 1, 1, tzinfo=UTC)
POLICY = PollPolicy(min_interval=2.0, max_interval=60.0, jitter=0.1)
EXACT = PollPolicy(min_interval=2.0, max_interval=60.0, jitter=0.0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def delay(history: PollHistory, now: float, policy: PollPolicy = EXACT, seed: int = 0) -> float:
    return next_poll_delay(history, at(now), policy, random.Random(seed))


def linear_history(total: int, step_s: float, polls: list[float], start_s: float = 0.0) -> PollHistory:
    """History after polling at `polls` a job that starts stepping at `start_s`, one step per `step_s`."""
    history = observe(None, at(0), 0, total)
    for t in polls:
        done = min(total, max(0, math.floor((t - start_s) / step_s)))
        history = observe(history, at(t), done, total)
    return history


# -- policy and history ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_interval": 0.0},
        {"min_interval": 10.0, "max_interval": 5.0},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"min_step_seconds": -1.0},
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        PollPolicy(**kwargs)


def test_observe_requires_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        observe(None, datetime(2025, 1, 1), 0, 10)


def test_observe_records_first_progress_as_anchor() -> None:
    history = observe(None, at(0), 0, 40)
    assert history == PollHistory(40, 0, at(0), None, 0)
    assert observe(history, at(5), 0, 40) is history  # nothing new, nothing to store
    history = observe(history, at(12), 3, 40)
    assert history == PollHistory(40, 3, at(12), at(12), 3)
    history = observe(history, at(20), 7, 40)
    assert history == PollHistory(40, 7, at(20), at(12), 3)


def test_observe_clamps_counts_and_resets_when_the_count_goes_back() -> None:
    history = observe(None, at(0), 50, 40)
    assert history.completed_steps == 40
    history = observe(linear_history(40, 1.0, [10, 20]), at(30), 2, 40)
    assert history == PollHistory(40, 2, at(30), at(30), 2)
    assert observe(history, at(31), -5, 40).completed_steps == 0


# -- bounds and jitter ----------------------------------------------------------------------------------------


def random_history(rng: random.Random) -> tuple[PollHistory, float]:
    """A history built from a random sequence of polls (including stalls, jumps, resets), and the last poll time."""
    total = rng.choice([0, 1, 2, 5, 38, 200, 1000, 5000])
    history = observe(None, at(0), 0, total)
    t, done = 0.0, 0
    for _ in range(rng.randint(0, 30)):
        t += rng.choice([0.001, 0.5, 2.0, 10.0, 60.0, 600.0, 7200.0]) * rng.random()
        roll = rng.random()
        if roll < 0.05:
            done = rng.randint(0, max(0, done))  # the service restarted the job
        elif roll < 0.15:
            done += rng.randint(0, max(1, total))  # a jump
        elif roll < 0.8:
            done += rng.randint(0, 5)
        history = observe(history, at(t), done, total)
    return history, t + rng.choice([0.0, 0.0, 1.0, 1000.0]) * rng.random()


def test_delay_always_within_bounds() -> None:
    rng = random.Random(1234)
    policies = [
        POLICY,
        EXACT,
        PollPolicy(min_interval=0.5, max_interval=5.0, jitter=0.5),
        PollPolicy(min_interval=30.0, max_interval=30.0, jitter=0.2),
        PollPolicy(min_interval=1.0, max_interval=600.0, jitter=0.9, min_step_seconds=0.0),
    ]
    for _ in range(3000):
        history, now = random_history(rng)
        policy = rng.choice(policies)
        value = next_poll_delay(history, at(now), policy, rng)
        assert math.isfinite(value)
        assert policy.min_interval <= value <= policy.max_interval, (history, now, policy, value)
        finish = estimate_finish(history, at(now))
        assert finish is None or finish >= history.progress_changed_at


def test_jitter_spreads_jobs_that_share_a_history() -> None:
    history = linear_history(100, 1.0, [20, 40])  # far from the finish: the plan is a long wait
    base = delay(history, 40)
    assert 20 < base < 50
    rng = random.Random(7)
    values = [next_poll_delay(history, at(40), POLICY, rng) for _ in range(500)]
    assert all(base * 0.9 - 1e-9 <= v <= base * 1.1 + 1e-9 for v in values)
    assert len({round(v, 3) for v in values}) > 400
    assert max(values) - min(values) > base * 0.15
    assert abs(sum(values) / len(values) - base) < base * 0.02  # both ways, centred on the plan


def test_jitter_never_goes_below_min_interval() -> None:
    history = observe(None, at(0), 0, 3)  # queued, tiny job: the plan is min_interval itself
    assert delay(history, 0) == EXACT.min_interval
    rng = random.Random(3)
    values = [next_poll_delay(history, at(0), POLICY, rng) for _ in range(500)]
    assert min(values) == POLICY.min_interval
    assert max(values) > POLICY.min_interval


def test_no_jitter_is_deterministic() -> None:
    history = linear_history(300, 1.0, [60, 120])
    assert len({delay(history, 120, seed=s) for s in range(20)}) == 1


# -- before progress ------------------------------------------------------------------------------------------


def test_before_progress_polls_at_a_moderate_growing_interval() -> None:
    history = observe(None, at(0), 0, 5)
    assert estimate_finish(history, at(0)) is None
    waits = [delay(observe(history, at(t), 0, 5), t) for t in (0, 2, 5, 10, 20, 40, 80, 160, 1000)]
    assert waits[0] == EXACT.min_interval
    assert waits == sorted(waits)
    assert waits[2] < 10  # still moderate after a few seconds in the queue
    assert waits[-1] == EXACT.max_interval


def test_before_progress_a_long_job_waits_for_its_shortest_possible_run() -> None:
    # 400 steps take at least ~400 s: polling every few seconds in the queue would be waste.
    assert delay(observe(None, at(0), 0, 400), 0) == EXACT.max_interval
    assert delay(observe(None, at(0), 0, 41), 0) == pytest.approx(20.0)
    # Without that bound (a sped-up emulator) it starts from min_interval.
    fast = PollPolicy(min_interval=2.0, max_interval=60.0, jitter=0.0, min_step_seconds=0.0)
    assert next_poll_delay(observe(None, at(0), 0, 400), at(0), fast, random.Random(0)) == 2.0


def test_a_single_progress_reading_gives_no_estimate_yet() -> None:
    history = linear_history(20, 10.0, [15], start_s=3.0)
    assert history.completed_steps == 1
    assert estimate_finish(history, at(15)) is None
    assert EXACT.min_interval <= delay(history, 15) <= 10


# -- estimating the finish ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "step_s", "start_s"), [(38, 10.0, 7.0), (500, 1.0, 0.0), (120, 2.5, 19.0)])
def test_estimate_converges_for_linear_progress(total: int, step_s: float, start_s: float) -> None:
    finish = start_s + total * step_s
    errors = []
    polls = []
    t = start_s + step_s * 1.5
    while t < finish - step_s:
        polls.append(t)
        estimate = estimate_finish(linear_history(total, step_s, polls, start_s), at(t))
        assert estimate is not None or len(polls) == 1
        if estimate is not None:
            errors.append(abs((estimate - at(finish)).total_seconds()))
        t += (finish - t) / 4 + 0.37  # polls at odd phases, closing in
    assert errors[-1] <= step_s + 0.5
    assert errors[-1] < errors[0] or errors[0] <= step_s
    # The estimate leans late (the count was seen after its step began), never far early.
    last = estimate_finish(linear_history(total, step_s, polls, start_s), at(polls[-1]))
    assert last is not None
    assert (last - at(finish)).total_seconds() > -0.1 * step_s


def run_job(
    total: int, step_s: float, start_s: float, policy: PollPolicy, seed: int, *, contended: bool = False
) -> tuple[int, float]:
    """Closed loop: the planner alone decides when to poll. Returns (polls, detection lag)."""
    rng = random.Random(seed)
    finish = start_s + total * step_s
    history = observe(None, at(0), 0, total)
    t, polls = 0.0, 0
    while True:
        t += next_poll_delay(history, at(t), policy, rng, contended=contended)
        polls += 1
        if t >= finish:
            return polls, t - finish
        done = min(total - 1, max(0, math.floor((t - start_s) / step_s)))
        history = observe(history, at(t), done, total)
        assert polls < 1000


def test_planner_finds_linear_jobs_soon_after_they_finish_with_few_polls() -> None:
    rng = random.Random(99)
    for seed in range(60):
        total = rng.randint(5, 600)
        step_s = max(1.0, rng.uniform(30, 600) / total)
        start_s = rng.uniform(0, 20)
        polls, lag = run_job(total, step_s, start_s, POLICY, seed)
        fixed_5s_polls = math.ceil((start_s + total * step_s) / 5)
        assert lag <= 6.0, (total, step_s, start_s, lag)
        assert polls <= max(8, fixed_5s_polls / 2), (total, step_s, start_s, polls)


# -- near the finish ------------------------------------------------------------------------------------------


def test_far_waits_a_share_of_the_remaining_time_near_aims_just_after_the_estimate() -> None:
    history = linear_history(200, 1.0, [10, 40, 100])  # 100 of 200 steps at t=100: finish at 200
    far = delay(history, 100)
    assert far == EXACT.max_interval
    history = linear_history(200, 1.0, [10, 40, 100, 190])
    near = delay(history, 190)
    estimate = estimate_finish(history, at(190))
    assert estimate is not None
    assert 190 + near >= (estimate - T0).total_seconds()  # at or just after the estimate
    assert near <= 12


# -- stalls and jumps -----------------------------------------------------------------------------------------


def test_stall_past_the_estimate_backs_off_gently_from_min_interval() -> None:
    # A 120-step job at 1 step/s stalls at step 118 (t=118): the estimate (t=120) passes without completion.
    history = linear_history(120, 1.0, [10, 60, 100, 118])
    estimate = estimate_finish(history, at(118))
    assert estimate == at(120)
    waits = [delay(observe(history, at(t), 118, 120), t) for t in (121, 125, 140, 180, 300, 3600, 86400)]
    assert waits[0] == pytest.approx(EXACT.min_interval, abs=0.5)
    assert waits == sorted(waits)
    assert waits[2] < 10
    # Moderate for good: a share of this 2-minute job's length, never max_interval.
    assert max(waits) <= 30 < EXACT.max_interval
    later = estimate_finish(observe(history, at(300), 118, 120), at(300))
    assert later is not None
    assert later >= at(300)  # the estimate slips with time


def test_resume_after_a_stall_keeps_the_measured_rate() -> None:
    # 1 step/s, then a 300 s pause at step 50, then on at 1 step/s.
    history = linear_history(200, 1.0, [10, 30, 50])
    history = observe(history, at(200), 50, 200)
    history = observe(history, at(360), 60, 200)  # resumed at t=350
    estimate = estimate_finish(history, at(360))
    assert estimate is not None
    assert abs((estimate - at(500)).total_seconds()) <= 5  # 140 steps left at 1 step/s, not the pause's rate


def test_jump_restarts_the_rate_measurement() -> None:
    history = linear_history(1000, 2.0, [10, 50, 100])  # 50 steps at t=100, 1 step per 2 s
    assert estimate_finish(history, at(100)) == at(100 + 950 * 2)
    history = observe(history, at(110), 900, 1000)  # a jump: 850 steps in 10 s
    assert history.anchor_at == at(110)
    assert history.anchor_steps == 900
    assert estimate_finish(history, at(110)) is None  # the old rate says nothing about the rest
    # Look again soon rather than trust a stale plan: at min_interval, or, knowing the service's fastest pace,
    # within the time the 99 steps after the current one need at that pace.
    fast = PollPolicy(min_interval=2.0, max_interval=60.0, jitter=0.0, min_step_seconds=0.0)
    assert next_poll_delay(history, at(110), fast, random.Random(0)) == 2.0
    assert delay(history, 110) <= 99 * EXACT.min_step_seconds
    history = observe(history, at(130), 910, 1000)  # on at the old pace
    estimate = estimate_finish(history, at(130))
    assert estimate is not None
    assert abs((estimate - at(130 + 90 * 2)).total_seconds()) <= 20


def test_unknown_total_steps_still_polls_within_bounds() -> None:
    history = observe(observe(None, at(0), 0, 0), at(30), 5, 0)
    assert estimate_finish(history, at(30)) is None
    assert EXACT.min_interval <= delay(history, 30) <= EXACT.max_interval


def simulate(
    steps_at: Callable[[float], tuple[int, int]], hours: float, policy: PollPolicy = POLICY
) -> list[tuple[float, float]]:
    """Poll a job as the poller does, the service answering `steps_at(t)` (completed, total), until `hours` have
    passed or the job is done; each poll's time and the delay the planner chose after it."""
    rng = random.Random(7)
    t = 0.0
    history: PollHistory | None = None
    polls: list[tuple[float, float]] = []
    while t < hours * 3600:
        completed, total = steps_at(t)
        if total and completed >= total:
            polls.append((t, 0.0))
            break
        history = observe(history, at(t), completed, total)
        wait = next_poll_delay(history, at(t), policy, rng)
        polls.append((t, wait))
        t += wait
    return polls


def test_a_long_wait_without_a_total_polls_sparsely() -> None:
    # Vertex AI while it waits for quota and processes the dataset: no step count for hours.
    delays = [wait for _, wait in simulate(lambda t: (0, 0), hours=18)]
    assert delays[0] < 3
    assert delays[:20] == sorted(delays[:20])  # growing
    assert min(delays[20:]) >= 0.9 * POLICY.max_interval  # then sparse, for the rest of the wait
    assert len(delays) < 18 * 3600 / (0.9 * POLICY.max_interval) + 20


def test_steps_without_a_total_do_not_restart_the_back_off() -> None:
    # A service that counts steps (one every 2 s) but never says how many there are: each new count is no news
    # about the finish, and must not bring the poll back to min_interval.
    delays = [wait for _, wait in simulate(lambda t: (int(t // 2), 0), hours=3)]
    assert min(delays[20:]) >= 0.9 * POLICY.max_interval
    assert len(delays) < 3 * 3600 / (0.9 * POLICY.max_interval) + 20


def test_a_total_that_appears_late_gives_an_estimate() -> None:
    # Three hours without a count, then 1000 steps of 10 s: found soon after the finish, not polled hard.
    def vertex(t: float) -> tuple[int, int]:
        start = 3 * 3600
        return (0, 0) if t < start else (min(1000, int((t - start) // 10)), 1000)

    polls = simulate(vertex, hours=6)
    finish = 3 * 3600 + 1000 * 10
    found = polls[-1][0]
    assert finish <= found < finish + 20  # found soon after the finish
    stepping = [t for t, _ in polls if t >= 3 * 3600]
    assert len(stepping) < 10_000 / (0.9 * POLICY.max_interval) + 20  # not polled every few seconds


# -- contended slots ------------------------------------------------------------------------------------------
# Queued jobs wait for the slot this job holds: the plan polls more closely near the finish, never below
# min(quota_min_interval, min_interval), and changes nothing before a rate is known.

QUOTA = PollPolicy(min_interval=2.0, max_interval=60.0, jitter=0.1, quota_min_interval=0.5)
QUOTA_EXACT = PollPolicy(min_interval=2.0, max_interval=60.0, jitter=0.0, quota_min_interval=0.5)


def contended_delay(history: PollHistory, now: float, policy: PollPolicy = QUOTA_EXACT, seed: int = 0) -> float:
    return next_poll_delay(history, at(now), policy, random.Random(seed), contended=True)


def test_policy_rejects_a_quota_min_interval_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="quota_min_interval"):
        PollPolicy(quota_min_interval=0.0)


def test_contended_delay_always_within_its_bounds() -> None:
    rng = random.Random(4321)
    policies = [
        QUOTA,
        QUOTA_EXACT,
        PollPolicy(min_interval=0.1, max_interval=5.0, jitter=0.5, quota_min_interval=0.5),  # min_interval is lower
        PollPolicy(min_interval=30.0, max_interval=30.0, jitter=0.2, quota_min_interval=0.25),
        PollPolicy(min_interval=1.0, max_interval=600.0, jitter=0.9, min_step_seconds=0.0, quota_min_interval=2.0),
    ]
    for _ in range(3000):
        history, now = random_history(rng)
        policy = rng.choice(policies)
        value = next_poll_delay(history, at(now), policy, rng, contended=True)
        assert math.isfinite(value)
        lowest = min(policy.quota_min_interval, policy.min_interval)
        assert lowest <= value <= policy.max_interval, (history, now, policy, value)


def test_contended_changes_nothing_before_a_rate_is_known() -> None:
    queued = observe(None, at(0), 0, 41)
    single_reading = linear_history(200, 1.0, [30])
    for history, now in [(queued, 0.0), (queued, 15.0), (single_reading, 30.0)]:
        assert contended_delay(history, now) == delay(history, now)


def test_contended_waits_for_the_earliest_finish_then_polls_at_quota_min_interval() -> None:
    # 20 steps at 1 step/s, polled where the plan first puts it: the finish (t=20) is a few seconds off.
    history = linear_history(20, 1.0, [9.5, 14.5])
    earliest = contended_delay(history, 14.5)
    assert 3.0 <= earliest <= 20 - 14.5, "no poll is spent before the finish is possible"
    assert delay(history, 14.5) > 20 - 14.5, "uncontended, the plan aims past the estimate"
    # In the window the finish may fall into, every quota_min_interval until it is seen.
    near = linear_history(20, 1.0, [9.5, 14.5, 18.6, 19.4])
    assert contended_delay(near, 19.4) == QUOTA_EXACT.quota_min_interval
    assert delay(near, 19.4) >= QUOTA_EXACT.min_interval


def test_contended_polls_a_slow_step_at_a_share_of_its_time_and_never_less_often_than_uncontended() -> None:
    # 40 steps of 10 s: the last step's end is uncertain by its length, so polls come every quarter step.
    history = linear_history(40, 10.0, [100, 300, 391])
    assert contended_delay(history, 391) == pytest.approx(10.0 * 0.25, rel=0.02)
    # Steps that slow hit the uncontended scan's cadence instead: contention never makes polling sparser.
    slower = linear_history(20, 60.0, [300, 900, 1141])
    assert contended_delay(slower, 1141) <= delay(slower, 1141)


def test_quota_min_interval_above_min_interval_leaves_min_interval_the_bound() -> None:
    # 40 steps of 0.5 s, a poll into the last one: a quarter step (0.125 s) is below both bounds.
    near = linear_history(40, 0.5, [9.5, 14.5, 18.6, 19.6])
    policy = PollPolicy(min_interval=0.2, max_interval=60.0, jitter=0.0, quota_min_interval=0.5)
    assert next_poll_delay(near, at(19.6), policy, random.Random(0), contended=True) == 0.2
    lower = PollPolicy(min_interval=0.2, max_interval=60.0, jitter=0.0, quota_min_interval=0.1)
    assert next_poll_delay(near, at(19.6), lower, random.Random(0), contended=True) == pytest.approx(0.125, rel=0.05)


def test_contended_stall_backs_off_from_the_contended_budget() -> None:
    history = linear_history(120, 1.0, [10, 60, 100, 118])  # stalls at 118 of 120; estimate t=120
    waits = [contended_delay(observe(history, at(t), 118, 120), t) for t in (121, 125, 140, 300, 86400)]
    assert waits[0] < EXACT.min_interval
    assert waits == sorted(waits)
    assert max(waits) <= 30, "a stalled job is not polled as if it were about to finish, nor left for long"


def test_contended_finds_short_jobs_within_a_fraction_of_a_second_for_a_few_more_polls() -> None:
    lags: dict[bool, list[float]] = {False: [], True: []}
    polls: dict[bool, list[int]] = {False: [], True: []}
    for seed in range(100):
        start_s = random.Random(seed).uniform(0, 1)  # the service's clock is not in phase with ours
        for contended in (False, True):
            count, lag = run_job(20, 1.0, start_s, QUOTA, seed, contended=contended)
            lags[contended].append(lag)
            polls[contended].append(count)
    p95 = {c: sorted(values)[94] for c, values in lags.items()}
    assert p95[True] <= QUOTA.quota_min_interval * (1 + QUOTA.jitter) + 1e-9
    assert p95[True] < p95[False] / 2
    extra = sum(polls[True]) / sum(polls[False])
    assert 1.0 < extra <= 2.5, "a few polls per job buy it"


# -- jobs of hours (Vertex AI) --------------------------------------------------------------------------------
# The Vertex AI defaults: with a known rate waits reach max_interval_with_rate (30 min), not max_interval; the
# back-off before a step count starts at no_total_interval; after the last step the plan waits a step.

VERTEX = PollPolicy(
    min_interval=2.0, max_interval=60.0, jitter=0.1, max_interval_with_rate=1800.0, no_total_interval=30.0
)
VERTEX_EXACT = PollPolicy(
    min_interval=2.0, max_interval=60.0, jitter=0.0, max_interval_with_rate=1800.0, no_total_interval=30.0
)


@pytest.mark.parametrize("kwargs", [{"max_interval_with_rate": -1.0}, {"no_total_interval": -1.0}])
def test_policy_rejects_negative_vertex_bounds(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        PollPolicy(**kwargs)


def test_with_a_known_rate_waits_are_bounded_by_max_interval_with_rate_instead() -> None:
    rng = random.Random(5678)
    policies = [VERTEX, VERTEX_EXACT, PollPolicy(min_interval=1.0, max_interval=600.0, max_interval_with_rate=120.0)]
    longest_with_rate = 0.0
    for _ in range(3000):
        history, now = random_history(rng)
        policy = rng.choice(policies)
        value = next_poll_delay(history, at(now), policy, rng)
        if estimate_finish(history, at(now)) is None:
            assert policy.min_interval <= value <= policy.max_interval, (history, now, policy, value)
        else:
            assert policy.min_interval <= value <= max(policy.max_interval, policy.max_interval_with_rate)
            longest_with_rate = max(longest_with_rate, value)
    assert longest_with_rate > 60.0, "the rate lifts max_interval"


def test_far_from_the_finish_a_known_rate_waits_past_max_interval() -> None:
    # 700 steps of 10 s, polled at steps 10, 30 and 60: the finish is 6,400 s off.
    history = linear_history(700, 10.0, [100, 300, 600])
    assert delay(history, 600) == EXACT.max_interval  # the Gemini bounds: capped
    far = delay(history, 600, VERTEX_EXACT)
    assert far == VERTEX_EXACT.max_interval_with_rate  # capped only by max_interval_with_rate ...
    closer = linear_history(700, 10.0, [100, 300, 600, 5000])  # ... and by a share of the remaining time
    remaining = 7000 - 5000
    assert EXACT.max_interval < delay(closer, 5000, VERTEX_EXACT) <= 0.8 * remaining


def test_a_stall_or_a_failure_is_seen_within_max_interval_with_rate() -> None:
    # 700 steps of 10 s, stalled for good at step 100: every wait stays within the bound, and the stall is
    # polled less and less often, not hammered.
    polls = simulate(lambda t: (min(100, int(t // 10)), 700), hours=24, policy=VERTEX)
    waits = [wait for _, wait in polls]
    assert max(waits) <= VERTEX.max_interval_with_rate
    assert len(polls) < 24 * 3600 / (0.9 * VERTEX.max_interval) / 4
    # Before the rate is known (queued: no progress yet) max_interval still applies.
    queued = simulate(lambda t: (0, 700), hours=2, policy=VERTEX)
    assert max(wait for _, wait in queued) <= VERTEX.max_interval


def vertex_job(steps: int, step_s: float = 10.0) -> Callable[[float], tuple[int, int]]:
    """The emulator's Vertex AI tuning job: two steps without a count (PENDING, dataset processing), `steps`
    tuning steps, one of post-processing with every step done, then the end (returned as (steps + 1, steps))."""

    def seen(t: float) -> tuple[int, int]:
        if t >= (steps + 3) * step_s:
            return steps + 1, steps
        if t < 2 * step_s:
            return 0, 0
        return min(steps, int((t - 2 * step_s) / step_s)), steps

    return seen


def follow_vertex(steps: int, policy: PollPolicy, seed: int) -> tuple[list[tuple[float, int, int]], float]:
    """Poll a vertex_job from its create as the poller does: what each poll saw (time, completed, total) and the
    detection lag."""
    job, finish = vertex_job(steps), (steps + 3) * 10.0
    rng = random.Random(seed)
    history = observe(None, at(0), 0, 0)
    t = next_poll_delay(history, at(0), policy, rng)
    seen: list[tuple[float, int, int]] = []
    while t < finish:
        completed, total = job(t)
        seen.append((t, completed, total))
        history = observe(history, at(t), completed, total)
        t += next_poll_delay(history, at(t), policy, rng)
        assert len(seen) < 2000
    return seen, t - finish


def test_jobs_of_hours_cost_a_fraction_of_a_60_s_loop_and_are_seen_within_10_s() -> None:
    # Jobs of 20 min to 2 h: together, under a quarter of a fixed 60 s loop's polls (a short one costs more).
    polls, fixed_60s = 0, 0
    for seed, steps in enumerate([117, 250, 400, 550, 715] * 4):
        seen, lag = follow_vertex(steps, VERTEX, seed)
        polls += len(seen) + 1  # and the one that sees the end
        fixed_60s += math.ceil((steps + 3) * 10.0 / 60.0)
        assert lag < 10.0, (steps, lag)
        assert len(seen) + 1 <= 14, (steps, seen)
        old, _ = follow_vertex(steps, POLICY, seed)
        assert len(old) >= (steps + 3) * 10.0 / 60.0, "with max_interval throughout, every minute costs a poll"
    assert polls <= fixed_60s / 4


def test_after_the_last_step_the_plan_waits_one_step_before_backing_off() -> None:
    # 100 steps of 10 s, every step done at t=1000 while the service post-processes: the end is about a step away.
    history = observe(linear_history(100, 10.0, [100, 500, 995]), at(1003), 100, 100)
    estimate = estimate_finish(history, at(1003))
    assert estimate is not None
    assert (estimate - at(1013)).total_seconds() == pytest.approx(0.0, abs=0.1)
    assert delay(history, 1003) == pytest.approx(10.0 + 0.25, abs=0.1)  # one step (as measured), and the margin
    rng = random.Random(11)
    waits = [next_poll_delay(history, at(1003), POLICY, rng) for _ in range(200)]
    assert min(waits) >= 10.0, "the jitter never lands it before the step's time"
    # Past it without the end: the usual back-off, from min_interval.
    overdue = [delay(history, t) for t in (1014, 1020, 1060, 1200)]
    assert overdue[0] == pytest.approx(EXACT.min_interval, abs=0.5)
    assert overdue == sorted(overdue)
    # With contended slots the quarter-step budget still applies.
    assert contended_delay(history, 1003) == pytest.approx(2.5, rel=0.02)


def test_a_vertex_job_costs_one_poll_after_its_last_step() -> None:
    for seed in range(20):
        seen, lag = follow_vertex(300, VERTEX, seed)
        after_last = [t for t, completed, total in seen if total and completed >= total]
        assert len(after_last) <= 1, after_last
        assert lag < 10.0


def test_without_a_step_count_the_back_off_starts_at_no_total_interval() -> None:
    # Vertex AI waiting for quota or processing the dataset: the back-off starts at 30 s and grows 1.5x.
    polls = simulate(lambda t: (0, 0), hours=1, policy=VERTEX_EXACT)
    times = [t for t, _ in polls]
    assert polls[0][1] == VERTEX_EXACT.no_total_interval
    assert times[1:4] == [30.0, 75.0, 135.0]  # each wait: 30 s + half the time waited, up to max_interval
    assert max(wait for _, wait in polls) == VERTEX_EXACT.max_interval
    # A queue with a known total (the Gemini API) still starts at min_interval; so does a no_total_interval below it.
    assert delay(observe(None, at(0), 0, 5), 0, VERTEX_EXACT) == EXACT.min_interval
    low = PollPolicy(min_interval=2.0, max_interval=60.0, jitter=0.0, no_total_interval=0.5)
    assert delay(observe(None, at(0), 0, 0), 0, low) == 2.0
    # Steps counted without a total start it again from the first count (t=30), and then do not restart it.
    counting = simulate(lambda t: (int(t // 2), 0), hours=1, policy=VERTEX_EXACT)
    assert counting[0][1] == VERTEX_EXACT.no_total_interval
    assert [t for t, _ in counting][1:5] == [30.0, 60.0, 105.0, 165.0]


def test_a_vertex_job_is_polled_at_most_once_before_its_step_count() -> None:
    # The emulator's 20 s before the count: the first poll comes at 27-33 s, after it.
    for seed in range(20):
        seen, _ = follow_vertex(150, VERTEX, seed)
        assert not [t for t, _, total in seen if total == 0]
        old, _ = follow_vertex(150, POLICY, seed)
        assert len([t for t, _, total in old if total == 0]) == 4  # from min_interval: 2, 5, 9.5, 16.25 s
