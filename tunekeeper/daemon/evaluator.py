"""Evaluator: tests a finished model on the job's `eval_data` and stores outputs and the exact-match share.

An evaluation never changes the job's state: whatever goes wrong is recorded as an `eval_failed` event. Its
claim is renewed while it runs (as a submission's lease is), so an evaluation longer than the lease is not
started a second time. Each generate call takes its share of the service's request budget, and a job asks at
most `eval.max_pairs` of them (the dispatcher refuses larger eval_data before tuning; rows changed since are
refused here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from tunekeeper.backends.googleapi.errors import ServiceError
from tunekeeper.backends.port import TrainingExample
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.worker import JobWorker, LeaseKeeper
from tunekeeper.datasets import DatasetError, check_eval_limits, load_eval_pairs
from tunekeeper.db.records import Job


class Evaluator(JobWorker):
    name = "evaluator"

    def __init__(self, context: DaemonContext) -> None:
        super().__init__(context)
        self.leases = LeaseKeeper(context, renew=context.store.renew_eval_claims)

    @property
    def concurrency(self) -> int:
        return self.context.settings.eval.concurrency

    async def held_back(self) -> float | None:
        # While dispatching is paused (the key refused, the service failing) every call would fail, and an
        # evaluation is not run twice: it waits.
        return self.context.settings.daemon.idle_interval if self.context.breaker.paused else None

    async def claim(self, limit: int) -> Sequence[Job]:
        return await self.context.store.claim_pending_evals(
            limit=limit, lease_seconds=self.context.settings.daemon.lease_seconds
        )

    async def handle(self, job: Job) -> None:
        store = self.context.store
        limits = self.context.settings.eval
        try:
            pairs = load_eval_pairs(job.eval_data)
            check_eval_limits(pairs, max_pairs=limits.max_pairs, max_input_chars=limits.max_input_chars)
        except DatasetError as exc:
            await store.record_eval(job, results=None, score=None, error=str(exc))
            return
        serving = job.tuned_endpoint_name or job.tuned_model_name  # where the service serves the model
        if not pairs or serving is None:
            await store.record_eval(job, results=[], score=None, error=None)
            return
        with self.leases.holding(job):
            results = await self._run(serving, pairs)
        score = sum(1 for r in results if r["match"]) / len(results)
        await store.record_eval(job, results=results, score=score, error=None)
        self.log.info("model_evaluated", job_id=job.id, tuned_model=job.tuned_model_name, score=score)

    async def _run(self, model_name: str, pairs: list[TrainingExample]) -> list[dict[str, Any]]:
        gate = asyncio.Semaphore(self.concurrency)
        budget = self.context.budget

        async def ask(pair: TrainingExample) -> dict[str, Any]:
            result: dict[str, Any] = {"input": pair.text_input, "expected": pair.output}
            try:
                async with gate, budget.limiter():
                    output = await self.context.backend.generate(model_name, pair.text_input)
            except ServiceError as exc:  # counted as a miss, with the reason beside it
                return result | {"output": None, "match": False, "error": str(exc)}
            return result | {"output": output, "match": output.strip() == pair.output.strip()}

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(ask(pair)) for pair in pairs]
        return [task.result() for task in tasks]
