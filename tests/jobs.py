"""Assertions about jobs that several test packages share: waiting for all to finish, auditing histories."""

from __future__ import annotations

from collections.abc import Sequence

from tests.harness import DaemonProcess
from tests.waiting import wait_until
from tunekeeper.db.records import Job, JobEvent
from tunekeeper.db.store import JobStore
from tunekeeper.states import EDGES, TERMINAL, State, Transition, is_valid_path


async def wait_all_terminal(
    store: JobStore, count: int, *, within: float, daemons: Sequence[DaemonProcess] = ()
) -> list[Job]:
    """Wait until `count` jobs exist, all terminal; the jobs, oldest first. Fails at once if a daemon exits."""

    async def finished() -> list[Job] | None:
        exited = [d.name for d in daemons if not d.running]
        assert not exited, f"daemon(s) {exited} exited: {tails(daemons)}"
        jobs = await store.list_jobs(limit=100_000)
        return jobs if len(jobs) == count and all(job.state in TERMINAL for job in jobs) else None

    try:
        jobs = await wait_until(finished, within=within, interval=0.1, message=f"{count} jobs to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; jobs by state: {await store.count_by_state()}\n{tails(daemons)}") from None
    return sorted(jobs, key=lambda job: job.id)


def tails(daemons: Sequence[DaemonProcess], lines: int = 15) -> str:
    """The end of each daemon's output, for a failure message."""
    parts = []
    for daemon in daemons:
        out = daemon.stdout_text().splitlines()[-lines:]
        err = daemon.stderr_text().splitlines()[-lines:]
        parts.append(f"--- {daemon.name} stdout\n" + "\n".join(out) + f"\n--- {daemon.name} stderr\n" + "\n".join(err))
    return "\n".join(parts)


def check_history(job: Job, events: Sequence[JobEvent]) -> list[State]:
    """The job's state changes chain from `queued` to its current state, each along an edge of the machine
    (every event's from_state is the previous event's to_state); the states visited."""
    changes = [event for event in events if event.from_state is not None or event.to_state is not None]
    states = [State.QUEUED]
    for event in changes:
        assert event.from_state == states[-1], (
            f"job {job.id}: event {event.id} ({event.kind}) starts from {event.from_state}, but the job was "
            f"{states[-1]}: {[(e.kind, e.from_state, e.to_state) for e in changes]}"
        )
        sources, to = EDGES[Transition(event.kind)]
        assert event.from_state in sources, (job.id, event)
        assert event.to_state == to, (job.id, event)
        states.append(to)
    assert is_valid_path(states), (job.id, states)
    assert states[-1] == job.state, (job.id, states, job.state)
    return states
