"""The job state machine, written down once.

    queued --claim--> submitting --accepted--> tuning --succeeded--> succeeded
       ^                  |  |                   |
       +--retry-----------+  +--rejected--> invalid   (queued --rejected--> invalid: its model id is taken)
                          +--submit_failed--> failed <--tuning_failed--+
    queued (never sent) --cancel--> cancelled
    queued (sent before) | submitting | tuning --cancel--> cancelling --cancelled--> cancelled
    tuning --cancelled_elsewhere--> cancelled   (the service says someone else cancelled the work)
    queued | submitting | tuning | cancelling --unreadable--> invalid   (the row holds what cannot be read)

Every transition in the store names one of the edges below; the store refuses any other, and guards each
UPDATE with the expected current state, so two actors can never both move the same job.

The state records what happened to the job; nothing that happens to its model afterwards changes it. That no
model remains is a fact beside the state: `purged_at` (with a `purged` event), set by the canceller or the
purger. Before schema revision 0007 `purged` was a state that replaced the outcome; that migration gave such
rows their outcome back.
"""

from __future__ import annotations

import itertools
from enum import StrEnum


class State(StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    TUNING = "tuning"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INVALID = "invalid"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class Transition(StrEnum):
    """The name of an edge; it is also the `kind` of the job_events row that records it."""

    CLAIMED = "claimed"
    ACCEPTED = "accepted"
    RETRY = "retry_scheduled"
    REJECTED = "rejected"
    SUBMIT_FAILED = "submit_failed"
    SUCCEEDED = "succeeded"
    TUNING_FAILED = "tuning_failed"
    CANCEL_STARTED = "cancel_started"
    CANCELLED = "cancelled"
    CANCELLED_ELSEWHERE = "cancelled_elsewhere"
    UNREADABLE = "unreadable"


EDGES: dict[Transition, tuple[frozenset[State], State]] = {
    Transition.CLAIMED: (frozenset({State.QUEUED, State.SUBMITTING}), State.SUBMITTING),
    Transition.ACCEPTED: (frozenset({State.SUBMITTING}), State.TUNING),
    Transition.RETRY: (frozenset({State.SUBMITTING}), State.QUEUED),
    Transition.REJECTED: (frozenset({State.QUEUED, State.SUBMITTING}), State.INVALID),
    Transition.SUBMIT_FAILED: (frozenset({State.SUBMITTING}), State.FAILED),
    Transition.SUCCEEDED: (frozenset({State.TUNING}), State.SUCCEEDED),
    Transition.TUNING_FAILED: (frozenset({State.TUNING}), State.FAILED),
    Transition.CANCEL_STARTED: (frozenset({State.QUEUED, State.SUBMITTING, State.TUNING}), State.CANCELLING),
    Transition.CANCELLED: (frozenset({State.QUEUED, State.CANCELLING}), State.CANCELLED),
    Transition.CANCELLED_ELSEWHERE: (frozenset({State.TUNING}), State.CANCELLED),
    Transition.UNREADABLE: (
        frozenset({State.QUEUED, State.SUBMITTING, State.TUNING, State.CANCELLING}),
        State.INVALID,
    ),
}
"""Each transition: the states it may start from, and the state it leads to.

CLAIMED starts from `submitting` too: a job whose submitter died keeps its state, and once its lease has
expired another submitter claims it again (the deterministic model id makes the second create safe).
UNREADABLE takes a row whose columns a claim cannot load (a producer's hand-written value the schema could
not refuse) out of every worker's way: nothing can be done with what cannot be read.
"""

TERMINAL: frozenset[State] = frozenset({State.SUCCEEDED, State.FAILED, State.INVALID, State.CANCELLED})
ACTIVE: frozenset[State] = frozenset({State.SUBMITTING, State.TUNING, State.CANCELLING})
"""States that may hold one of the service's concurrent tuning slots (counted against max_active_jobs)."""
CANCELLABLE: frozenset[State] = frozenset({State.QUEUED, State.SUBMITTING, State.TUNING})
MAY_LEAVE_A_MODEL: frozenset[State] = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
"""Finished states whose job may have left a model on the service: what the purger may remove (never invalid:
nothing was started for it)."""
RETRYABLE: frozenset[State] = frozenset({State.FAILED, State.INVALID, State.CANCELLED})
"""States a job may be retried from (a copy of its request is queued as a new job)."""


class IllegalTransition(Exception):
    def __init__(self, transition: Transition, current: State) -> None:
        super().__init__(f"transition {transition} is not allowed from state {current}")
        self.transition = transition
        self.current = current


def target(transition: Transition) -> State:
    return EDGES[transition][1]


def sources(transition: Transition) -> frozenset[State]:
    return EDGES[transition][0]


def check(transition: Transition, current: State) -> State:
    """The state `transition` leads to from `current`, or IllegalTransition."""
    allowed, to = EDGES[transition]
    if current not in allowed:
        raise IllegalTransition(transition, current)
    return to


def is_valid_path(states: list[State]) -> bool:
    """True when each consecutive pair of states is joined by some edge (used to audit job histories)."""
    steps = {(source, to) for allowed, to in EDGES.values() for source in allowed}
    return all((a, b) in steps for a, b in itertools.pairwise(states))
