"""The job state machine table: every edge, what `check` allows and refuses, and path auditing."""

from __future__ import annotations

import itertools

import pytest

from tunekeeper.states import (
    ACTIVE,
    CANCELLABLE,
    EDGES,
    TERMINAL,
    IllegalTransition,
    State,
    Transition,
    check,
    is_valid_path,
    sources,
    target,
)

Q, S, T = State.QUEUED, State.SUBMITTING, State.TUNING
OK, FAILED, INVALID = State.SUCCEEDED, State.FAILED, State.INVALID
CANCELLING, CANCELLED = State.CANCELLING, State.CANCELLED

EXPECTED_EDGES: dict[Transition, tuple[set[State], State]] = {
    Transition.CLAIMED: ({Q, S}, S),
    Transition.ACCEPTED: ({S}, T),
    Transition.RETRY: ({S}, Q),
    Transition.REJECTED: ({Q, S}, INVALID),
    Transition.SUBMIT_FAILED: ({S}, FAILED),
    Transition.SUCCEEDED: ({T}, OK),
    Transition.TUNING_FAILED: ({T}, FAILED),
    Transition.CANCEL_STARTED: ({Q, S, T}, CANCELLING),
    Transition.CANCELLED: ({Q, CANCELLING}, CANCELLED),
    Transition.CANCELLED_ELSEWHERE: ({T}, CANCELLED),
    Transition.UNREADABLE: ({Q, S, T, CANCELLING}, INVALID),
}

ALL_PAIRS = list(itertools.product(Transition, State))


def test_the_table_is_exactly_the_documented_machine() -> None:
    assert set(EDGES) == set(Transition), "every transition has an edge, and every edge a transition name"
    assert {name: (set(froms), to) for name, (froms, to) in EDGES.items()} == EXPECTED_EDGES


@pytest.mark.parametrize("transition", list(Transition))
def test_target_and_sources_read_the_table(transition: Transition) -> None:
    froms, to = EXPECTED_EDGES[transition]
    assert target(transition) is to
    assert set(sources(transition)) == froms


def test_transition_names_are_the_event_kinds() -> None:
    # job_events.kind stores these strings; renaming one breaks every recorded history
    assert {t.value for t in Transition} == {
        "claimed",
        "accepted",
        "retry_scheduled",
        "rejected",
        "submit_failed",
        "succeeded",
        "tuning_failed",
        "cancel_started",
        "cancelled",
        "cancelled_elsewhere",
        "unreadable",
    }
    assert {s.value for s in State} == {
        "queued",
        "submitting",
        "tuning",
        "succeeded",
        "failed",
        "invalid",
        "cancelling",
        "cancelled",
    }


@pytest.mark.parametrize(("transition", "current"), ALL_PAIRS, ids=[f"{t.value}-from-{s.value}" for t, s in ALL_PAIRS])
def test_check_allows_exactly_the_edges(transition: Transition, current: State) -> None:
    froms, to = EXPECTED_EDGES[transition]
    if current in froms:
        assert check(transition, current) is to
    else:
        with pytest.raises(IllegalTransition) as raised:
            check(transition, current)
        assert raised.value.transition is transition
        assert raised.value.current is current
        assert str(raised.value) == f"transition {transition.value} is not allowed from state {current.value}"


def test_a_terminal_state_is_final() -> None:
    # What happened to a job is never overwritten: purging its model sets purged_at beside the state.
    assert not any(froms & TERMINAL for froms, _ in EDGES.values())
    assert "purged" not in {s.value for s in State} | {t.value for t in Transition}


def test_state_groups() -> None:
    assert frozenset({OK, FAILED, INVALID, CANCELLED}) == TERMINAL
    assert frozenset({S, T, CANCELLING}) == ACTIVE
    assert frozenset({Q, S, T}) == CANCELLABLE
    assert not TERMINAL & ACTIVE
    assert not TERMINAL & CANCELLABLE


def reachable(start: State) -> set[State]:
    reached = {start}
    frontier = [start]
    while frontier:
        here = frontier.pop()
        for froms, to in EDGES.values():
            if here in froms and to not in reached:
                reached.add(to)
                frontier.append(to)
    return reached


def test_every_state_is_reachable_from_queued() -> None:
    assert reachable(Q) == set(State)


@pytest.mark.parametrize("state", sorted(set(State) - TERMINAL))
def test_every_unfinished_state_can_finish(state: State) -> None:
    assert reachable(state) & TERMINAL


@pytest.mark.parametrize(
    "path",
    [
        [],
        [Q],
        [Q, S, T, OK],
        [Q, S, Q, S, T, FAILED],  # a transient error, then a tuning failure
        [Q, S, S, T],  # a submission taken over after its lease expired
        [Q, S, INVALID],
        [Q, S, FAILED],
        [Q, CANCELLED],
        [Q, S, CANCELLING, CANCELLED],
        [Q, S, T, CANCELLING, CANCELLED],
    ],
)
def test_valid_paths(path: list[State]) -> None:
    assert is_valid_path(path)


@pytest.mark.parametrize(
    "path",
    [
        [Q, T],  # skipped submitting
        [Q, S, T, Q],  # tuning never goes back to the queue
        [Q, S, T, OK, FAILED],
        [OK, T],
        [Q, S, T, OK, Q],
        [FAILED, Q],  # a retry is a new job; the failed one stays failed
        [CANCELLED, OK],
        [T, T],  # tuning -> tuning is not an edge (progress is not a transition)
        [CANCELLING, CANCELLING],
        [Q, Q],
    ],
)
def test_invalid_paths(path: list[State]) -> None:
    assert not is_valid_path(path)
