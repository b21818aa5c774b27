"""The poller and the dispatcher against the emulator: who nudges whom, and polling while slots are contended.

Real parts throughout: a SQLite file, the emulator over loopback, the workers' own loops (run as tasks on the
test's event loop). Spies only count: a worker's nudges, a poller's handled jobs, a store method's calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import SecretStr

from tests.harness import TEST_API_KEY
from tests.waiting import wait_until
from tunekeeper.config import DaemonSettings, DatabaseSettings, GeminiSettings, PollSettings, Settings
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.dispatcher import Dispatcher
from tunekeeper.daemon.poller import Poller
from tunekeeper.daemon.service import open_context
from tunekeeper.daemon.worker import JobWorker
from tunekeeper.db.records import Job, NewJob
from tunekeeper.emulator import Emulator
from tunekeeper.states import State

PAIRS = [{"text_input": str(n), "output": str(n + 1)} for n in range(10)]


def make_settings(database_url: str, base_url: str, *, max_active_jobs: int = 100, **poll: Any) -> Settings:
    return Settings(
        database=DatabaseSettings(url=database_url, listen=False),
        gemini=GeminiSettings(
            base_url=base_url,
            api_key=SecretStr(TEST_API_KEY),
            max_active_jobs=max_active_jobs,
            creates_per_minute=6000,
            requests_per_minute=600000,
            retry_base_delay=0.01,
            retry_max_delay=0.2,
        ),
        daemon=DaemonSettings(idle_interval=0.5, lease_seconds=3, shutdown_grace=5),
        poll=PollSettings(**{"min_interval": 0.05, "max_interval": 0.2, "min_step_seconds": 0, **poll}),
    )


class CountingPoller(Poller):
    def __init__(self, context: DaemonContext) -> None:
        super().__init__(context)
        self.handled = 0

    async def handle(self, job: Job) -> None:
        self.handled += 1
        await super().handle(job)


@contextlib.asynccontextmanager
async def running(*workers: JobWorker) -> AsyncIterator[None]:
    """The workers' own loops as tasks; stopped (and drained) on the way out."""
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stopping, grace=5), name=worker.name) for worker in workers]
    try:
        yield
    finally:
        stopping.set()
        for worker in workers:
            worker.nudge()
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)


async def one_pass(worker: JobWorker) -> None:
    """What one turn of the worker's loop does: claim what is due, handle it, follow the claim up."""
    claimed = await worker.claim(100)
    for job in claimed:
        await worker.handle(job)
    await worker.after_claim(len(claimed), 100)


async def submitted(context: DaemonContext, name: str, *, epochs: int = 5) -> Job:
    """A new job, created on the service by one dispatcher pass: tuning (10 examples, batch 4)."""
    job_id = await context.store.add_job(
        NewJob(display_name=name, training_data=PAIRS, epoch_count=epochs, batch_size=4)
    )
    await one_pass(Dispatcher(context))
    return await state_of(context, job_id, State.TUNING)


async def state_of(context: DaemonContext, job_id: int, expected: State) -> Job:
    job = await context.store.get_job(job_id)
    assert job is not None
    assert job.state == expected, (job.state, job.last_error)
    return job


def operation_gets(emulator: Emulator, job: Job) -> int:
    assert job.tuned_model_id is not None
    return int(emulator.stats()["models"][job.tuned_model_id]["operation_gets"])


def counting(target: object, method: str) -> list[int]:
    """Wrap an async method of `target` to count its calls; the count is the list's only item."""
    calls = [0]
    original: Callable[..., Awaitable[Any]] = getattr(target, method)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await original(*args, **kwargs)

    setattr(target, method, wrapper)
    return calls


def counting_nudges(worker: JobWorker) -> list[int]:
    """Count the worker's nudges (it is still nudged); the count is the list's only item."""
    calls = [0]
    original = worker.nudge

    def nudge() -> None:
        calls[0] += 1
        original()

    worker.nudge = nudge  # type: ignore[method-assign]
    return calls


# ---- nudges ------------------------------------------------------------------------------------------------


async def test_a_poll_that_leaves_the_job_tuning_does_not_nudge_the_dispatcher(
    sqlite_url: str, emulator: Emulator
) -> None:
    async with open_context(make_settings(sqlite_url, emulator.base_url)) as context:
        emulator.configure(step_seconds=60)  # tunes for ages: every poll finds it running
        job = await submitted(context, "still tuning")
        poller, dispatcher = Poller(context), Dispatcher(context)
        poller.feeds(dispatcher)
        nudges = counting_nudges(dispatcher)
        async with running(poller):
            await wait_until(lambda: operation_gets(emulator, job) >= 3, message="three polls of a running job")
            assert nudges[0] == 0, "a poll that found the job still tuning freed no slot"
            await state_of(context, job.id, State.TUNING)

            emulator.configure(step_seconds=0.001)  # the rest of the job now takes a moment
            await wait_until(lambda: nudges[0] >= 1, message="the dispatcher to be nudged")
        assert nudges[0] == 1, "one job left tuning: one nudge"
        await state_of(context, job.id, State.SUCCEEDED)


async def test_the_dispatcher_still_nudges_the_poller_after_each_job(sqlite_url: str, emulator: Emulator) -> None:
    async with open_context(make_settings(sqlite_url, emulator.base_url)) as context:
        emulator.configure(step_seconds=60)
        dispatcher, poller = Dispatcher(context), Poller(context)
        dispatcher.feeds(poller)
        nudges = counting_nudges(poller)
        job_ids = [await context.store.add_job(NewJob(display_name=f"fresh {n}", training_data=PAIRS)) for n in (1, 2)]
        async with running(dispatcher):
            for job_id in job_ids:
                await wait_until(reached(context, job_id, State.TUNING), message=f"job {job_id} accepted")
            await wait_until(lambda: nudges[0] >= 2, message="the poller to be nudged")
        assert nudges[0] == 2, "each accepted job is news for the poller"


async def in_state(context: DaemonContext, job_id: int, expected: State) -> bool:
    job = await context.store.get_job(job_id)
    return job is not None and job.state == expected


def reached(context: DaemonContext, job_id: int, expected: State) -> Callable[[], Awaitable[bool]]:
    """A condition for wait_until: the job is in `expected`."""

    async def condition() -> bool:
        return await in_state(context, job_id, expected)

    return condition


async def test_a_nudge_before_any_poll_is_due_costs_the_poller_a_read_not_a_claim(
    sqlite_url: str, emulator: Emulator
) -> None:
    settings = make_settings(sqlite_url, emulator.base_url, min_interval=30, max_interval=60)
    async with open_context(settings) as context:
        emulator.configure(step_seconds=60)
        job = await submitted(context, "next poll far off")
        poller = Poller(context)
        claims = counting(context.store, "claim_due_polls")
        reads = counting(context.store, "next_poll_due")
        async with running(poller):
            await wait_until(lambda: reads[0] >= 1, message="the poller to look for due polls")
            claims_before = claims[0]
            for nudge in range(1, 6):  # what the SQLite watch does after any commit
                seen = reads[0]
                poller.nudge()
                await wait_until(lambda seen=seen: reads[0] > seen, message=f"nudge {nudge} to be looked at")
            assert claims[0] == claims_before, "no poll was due: no claim transaction"
        assert operation_gets(emulator, job) == 0


# ---- contended slots ---------------------------------------------------------------------------------------


async def test_the_dispatcher_tells_its_pollers_whether_queued_jobs_wait_for_a_slot(
    sqlite_url: str, emulator: Emulator
) -> None:
    async with open_context(make_settings(sqlite_url, emulator.base_url, max_active_jobs=1)) as context:
        emulator.configure(step_seconds=60)
        store = context.store
        first = await store.add_job(NewJob(display_name="first", training_data=PAIRS))
        second = await store.add_job(NewJob(display_name="second", training_data=PAIRS))
        dispatcher, poller, bystander = Dispatcher(context), Poller(context), Poller(context)
        dispatcher.feeds(poller)

        await one_pass(dispatcher)  # one slot: the first job takes it, the second waits
        await state_of(context, first, State.TUNING)
        await state_of(context, second, State.QUEUED)
        assert poller.slots_contended, "the second job waits for the slot the first holds"
        assert not bystander.slots_contended, "only the pollers the dispatcher feeds are told"

        emulator.configure(step_seconds=0.001)

        async def first_succeeded() -> bool:
            await one_pass(poller)
            return await in_state(context, first, State.SUCCEEDED)

        await wait_until(first_succeeded, message="the first job to succeed")
        await one_pass(dispatcher)  # the freed slot goes to the second job: nothing is left waiting
        await state_of(context, second, State.TUNING)
        assert not poller.slots_contended, "the queue is empty: polling goes back to sparse"


async def contended_run(context: DaemonContext, emulator: Emulator, *, contended: bool) -> tuple[int, int]:
    """One job of 5 steps of 0.5 s followed by a poller told the slots are (or are not) contended:
    (the poller's handled jobs, the service's operation GETs)."""
    emulator.configure(step_seconds=0.5)
    job = await submitted(context, f"contended {contended}", epochs=2)  # 10 examples x 2 epochs / batch 4: 5 steps
    poller = CountingPoller(context)
    poller.slots_contended = contended
    async with running(poller):
        await wait_until(reached(context, job.id, State.SUCCEEDED), within=20, message=f"{job.display_name} done")
    return poller.handled, operation_gets(emulator, job)


async def test_with_contended_slots_the_poller_keeps_a_job_near_its_finish_and_polls_it_till_done(
    sqlite_url: str, emulator: Emulator
) -> None:
    # Uncontended polls never come closer than 0.3 s. Contended ones come every quarter step (0.125 s) in the
    # last step, close enough (within twice quota_min_interval) that the poll keeps its job instead of storing
    # the time and claiming it back; with a lease of 3 s a hold lasts at most 1 s.
    settings = make_settings(sqlite_url, emulator.base_url, min_interval=0.3, max_interval=1, quota_min_interval=0.1)
    async with open_context(settings) as context:
        handled, gets = await contended_run(context, emulator, contended=False)
        assert gets == handled, "uncontended, every poll is a claim of its own"
        handled, gets = await contended_run(context, emulator, contended=True)
        assert gets > handled, "contended, the final polls come from a job the poller kept"
