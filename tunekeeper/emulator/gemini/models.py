"""The in-memory store of tuned models and their create operations, and the tuning simulation.

Progress is a pure function of the clock: each model keeps an anchor (a time and the number of steps done by
then) and its seconds per step, and every read computes the rest. No task runs per job, so any number of
models can be tuning while the emulator sits idle. A model whose end time has passed is settled (ACTIVE or
FAILED) the first time anything looks at it, with `done_at` set to the simulated end time, not the read time.
"""

from __future__ import annotations

import heapq
import math
import random
import re
import string
from dataclasses import dataclass, field
from typing import Any

from tunekeeper.emulator.errors import ApiError, quota_failure
from tunekeeper.emulator.gemini.validation import (
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    CreateRequest,
    PatchRequest,
)
from tunekeeper.emulator.timestamps import rfc3339

CREATING = "CREATING"
ACTIVE = "ACTIVE"
FAILED = "FAILED"

CANCELLED_CODE = 1  # google.rpc.Code.CANCELLED
INTERNAL_CODE = 13  # google.rpc.Code.INTERNAL
CANCELLED_MESSAGE = "Operation cancelled."
FAILED_MESSAGE = "Tuning failed because of an internal error. Try again later."

_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_SUFFIX_CHARS = 12
_ID_BASE_MAX_CHARS = 40 - 1 - _ID_SUFFIX_CHARS


def model_not_found(model_id: str) -> ApiError:
    return ApiError("NOT_FOUND", f"Tuned model tunedModels/{model_id} does not exist.")


@dataclass(slots=True, eq=False)
class TunedModel:
    """One tuned model and its create operation (each model has exactly one)."""

    id: str
    seq: int  # creation order; lists are ordered by it
    operation_id: str
    display_name: str
    description: str
    base_model: str | None
    source_tuned_model: str | None
    source_base_model: str | None
    temperature: float
    top_p: float
    top_k: int
    hyperparameters: dict[str, Any]  # rendered, camelCase
    examples: tuple[tuple[str, str], ...]
    epoch_end_steps: tuple[int, ...]  # step at which each epoch completes; the last is totalSteps
    epoch_losses: tuple[float, ...]
    created_at: float
    updated_at: float
    step_seconds: float
    anchor_time: float
    anchor_steps: float
    stop_point: float  # progress (in steps) at which the job ends: totalSteps, or mid-step for a failure
    fails: bool
    state: str = CREATING
    done_at: float | None = None
    final_steps: int | None = None
    error: tuple[int, str] | None = None
    snapshot_cache: list[dict[str, Any]] = field(default_factory=list)
    name: str = field(init=False)  # "tunedModels/ID"
    operation_name: str = field(init=False)
    create_time: str = field(init=False)  # rendered once: it never changes

    def __post_init__(self) -> None:
        self.name = f"tunedModels/{self.id}"
        self.operation_name = f"{self.name}/operations/{self.operation_id}"
        self.create_time = rfc3339(self.created_at)

    @property
    def total_steps(self) -> int:
        return self.epoch_end_steps[-1]

    @property
    def end_time(self) -> float:
        return self.anchor_time + (self.stop_point - self.anchor_steps) * self.step_seconds

    def settle(self, now: float) -> bool:
        """Finish the job if its end time has passed. True when this call finished it."""
        if self.state != CREATING or now < self.end_time:
            return False
        end = self.end_time
        self.final_steps = math.floor(self.stop_point)
        self.snapshots(end)
        self.done_at = end
        self.updated_at = end
        if self.fails:
            self.state = FAILED
            self.error = (INTERNAL_CODE, FAILED_MESSAGE)
        else:
            self.state = ACTIVE
        return True

    def completed_steps(self, now: float) -> int:
        if self.final_steps is not None:
            return self.final_steps
        progress = self.anchor_steps + (now - self.anchor_time) / self.step_seconds
        return max(0, min(math.floor(progress), math.floor(self.stop_point)))

    def snapshots(self, now: float) -> list[dict[str, Any]]:
        """One snapshot per completed epoch. Cached once made, since completed epochs never change."""
        cache = self.snapshot_cache
        if len(cache) < len(self.epoch_end_steps):
            completed = self.completed_steps(now)
            while len(cache) < len(self.epoch_end_steps) and self.epoch_end_steps[len(cache)] <= completed:
                epoch = len(cache) + 1
                step = self.epoch_end_steps[epoch - 1]
                at = self.anchor_time + (step - self.anchor_steps) * self.step_seconds
                cache.append(
                    {
                        "step": step,
                        "epoch": epoch,
                        # proto JSON writes a non-finite number as a string
                        "meanLoss": _proto_number(self.epoch_losses[epoch - 1]),
                        "computeTime": rfc3339(at),
                    }
                )
        return cache

    def rescale(self, step_seconds: float, now: float) -> None:
        """Continue from the current progress at a new speed (a run-time change of step_seconds)."""
        self.snapshots(now)  # completed epochs keep the times they had
        self.anchor_steps = self.anchor_steps + (now - self.anchor_time) / self.step_seconds
        self.anchor_time = now
        self.step_seconds = step_seconds

    def cancel(self, now: float) -> None:
        self.snapshots(now)
        self.final_steps = self.completed_steps(now)
        self.state = FAILED
        self.done_at = now
        self.updated_at = now
        self.error = (CANCELLED_CODE, CANCELLED_MESSAGE)


def epoch_end_steps(examples: int, epochs: int, batch_size: int) -> tuple[int, ...]:
    """Epoch e ends at step ceil(e * examples / batch size); so totalSteps = ceil(examples * epochs / batch)."""
    return tuple(math.ceil(epoch * examples / batch_size) for epoch in range(1, epochs + 1))


def id_base(display_name: str) -> str:
    """The display name's words joined by `-`, made to fit the id pattern with room for the suffix."""
    base = "-".join(re.findall(r"[a-z0-9]+", display_name.lower()))
    if not base:
        base = "tuned-model"
    elif not base[0].isalpha():
        base = "model-" + base
    return base[:_ID_BASE_MAX_CHARS].rstrip("-")


def _proto_number(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


@dataclass(frozen=True, slots=True)
class TuningOptions:
    """The run-time settings a create reads."""

    step_seconds: float
    fail_rate: float
    max_active_tuning: int | None
    diverge_rate: float = 0.0


class ModelStore:
    def __init__(self, seed: int, base_models: frozenset[str]) -> None:
        self.seed = seed
        self.base_models = base_models
        self.reset()

    def reset(self) -> None:
        self._models: dict[str, TunedModel] = {}
        self._tuning: dict[str, TunedModel] = {}  # models in CREATING, settled or not
        self._ends: list[tuple[float, int, str]] = []  # (end_time, seq, id) heap; stale entries skipped
        self._gone: dict[str, dict[str, Any]] = {}  # timelines of deleted models
        self._seq = 0
        self._ids = random.Random(f"{self.seed}:ids")
        self._fate = random.Random(f"{self.seed}:fate")
        self.max_concurrent_tuning = 0

    # -- reads ---------------------------------------------------------------------------------------------

    def get(self, model_id: str, now: float) -> TunedModel:
        model = self._models.get(model_id)
        if model is None:
            raise model_not_found(model_id)
        if model.state == CREATING and model.settle(now):
            self._tuning.pop(model_id, None)
        return model

    def get_operation(self, model_id: str, operation_id: str, now: float) -> TunedModel:
        model = self.get(model_id, now)
        if model.operation_id != operation_id:
            raise ApiError("NOT_FOUND", f"Operation tunedModels/{model_id}/operations/{operation_id} does not exist.")
        return model

    def all(self) -> list[TunedModel]:
        """Every model in creation order, unsettled: callers settle what they render (see settle)."""
        return list(self._models.values())

    def settle(self, model: TunedModel, now: float) -> None:
        if model.state == CREATING and model.settle(now):
            self._tuning.pop(model.id, None)

    def tuning_count(self, now: float) -> int:
        self._settle_due(now)
        return len(self._tuning)

    def _settle_due(self, now: float) -> None:
        ends = self._ends
        while ends and ends[0][0] <= now:
            _, seq, model_id = heapq.heappop(ends)
            model = self._models.get(model_id)
            if model is not None and model.seq == seq:
                self.settle(model, now)

    # -- writes --------------------------------------------------------------------------------------------

    def create(self, request: CreateRequest, now: float, options: TuningOptions) -> TunedModel:
        base_model, source_base = self._source(request, now)
        if request.tuned_model_id is not None and request.tuned_model_id in self._models:
            raise ApiError("ALREADY_EXISTS", f"Tuned model tunedModels/{request.tuned_model_id} already exists.")
        active = self.tuning_count(now)
        if options.max_active_tuning is not None and active >= options.max_active_tuning:
            raise ApiError(
                "RESOURCE_EXHAUSTED",
                f"Quota exceeded: at most {options.max_active_tuning} tuning jobs may run at once "
                f"({active} running). Wait for one to finish and try again.",
                [
                    quota_failure(
                        "generativelanguage.googleapis.com/tuning_concurrent_jobs",
                        "ConcurrentTuningJobsPerProject",
                        f"Limit: {options.max_active_tuning} concurrent tuning jobs.",
                    )
                ],
            )
        model_id = request.tuned_model_id or self._new_id(request.display_name)
        operation_id = "".join(self._ids.choices(_ID_ALPHABET, k=_ID_SUFFIX_CHARS))

        ends = epoch_end_steps(len(request.examples), request.epoch_count, request.batch_size)
        # A fixed number of draws per create keeps later creates' fates independent of fail_rate changes.
        fate = self._fate
        fails = fate.random() < options.fail_rate
        fail_steps = fate.randrange(ends[-1])
        first_loss = fate.uniform(2.0, 6.0)
        decay = fate.uniform(0.45, 0.8)
        losses = tuple(round(first_loss * decay**epoch, 6) for epoch in range(1, request.epoch_count + 1))
        # drawn only while diverge_rate is set, so that other runs' seeded fates stay as they were
        if options.diverge_rate > 0 and fate.random() < options.diverge_rate:
            losses = losses[:1] + (math.nan,) * (len(losses) - 1)  # a diverged run

        hyperparameters: dict[str, Any] = {"epochCount": request.epoch_count, "batchSize": request.batch_size}
        if request.learning_rate is not None:
            hyperparameters["learningRate"] = request.learning_rate
        if request.learning_rate_multiplier is not None:
            hyperparameters["learningRateMultiplier"] = request.learning_rate_multiplier

        self._seq += 1
        model = TunedModel(
            id=model_id,
            seq=self._seq,
            operation_id=operation_id,
            display_name=request.display_name,
            description=request.description,
            base_model=base_model,
            source_tuned_model=request.source_tuned_model,
            source_base_model=source_base,
            temperature=DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            top_p=DEFAULT_TOP_P if request.top_p is None else request.top_p,
            top_k=DEFAULT_TOP_K if request.top_k is None else request.top_k,
            hyperparameters=hyperparameters,
            examples=request.examples,
            epoch_end_steps=ends,
            epoch_losses=losses,
            created_at=now,
            updated_at=now,
            step_seconds=options.step_seconds,
            anchor_time=now,
            anchor_steps=0.0,
            stop_point=fail_steps + 0.5 if fails else float(ends[-1]),
            fails=fails,
        )
        self._models[model_id] = model
        self._gone.pop(model_id, None)
        self._tuning[model_id] = model
        heapq.heappush(self._ends, (model.end_time, model.seq, model_id))
        self.max_concurrent_tuning = max(self.max_concurrent_tuning, len(self._tuning))
        return model

    def _source(self, request: CreateRequest, now: float) -> tuple[str | None, str | None]:
        """(baseModel, tunedModelSource.baseModel) of a new model; checks the source exists and can be tuned."""
        if request.source_tuned_model is None:
            if request.base_model not in self.base_models:
                raise ApiError(
                    "INVALID_ARGUMENT",
                    f"Base model {request.base_model} is not available for tuning. Available: "
                    + ", ".join(sorted(self.base_models))
                    + ".",
                )
            return request.base_model, None
        name = request.source_tuned_model
        if not name.startswith("tunedModels/"):
            raise ApiError(
                "INVALID_ARGUMENT", f"tuned_model_source.tuned_model {name!r} must look like tunedModels/ID."
            )
        source = self.get(name.removeprefix("tunedModels/"), now)
        if source.state != ACTIVE:
            raise ApiError(
                "FAILED_PRECONDITION",
                f"Tuned model {name} is {source.state}; only ACTIVE tuned models can be tuned further.",
            )
        return None, source.base_model or source.source_base_model

    def _new_id(self, display_name: str) -> str:
        base = id_base(display_name)
        while True:
            suffix = "".join(self._ids.choices(_ID_ALPHABET, k=_ID_SUFFIX_CHARS))
            candidate = f"{base}-{suffix}"
            if candidate not in self._models:
                return candidate

    def patch(self, model_id: str, patch: PatchRequest, now: float) -> TunedModel:
        model = self.get(model_id, now)
        for name in patch.fields:
            if name == "displayName":
                model.display_name = patch.display_name or ""
            elif name == "description":
                model.description = patch.description or ""
            elif name == "temperature":
                model.temperature = DEFAULT_TEMPERATURE if patch.temperature is None else patch.temperature
            elif name == "topP":
                model.top_p = DEFAULT_TOP_P if patch.top_p is None else patch.top_p
            elif name == "topK":
                model.top_k = DEFAULT_TOP_K if patch.top_k is None else patch.top_k
        if patch.fields:
            model.updated_at = now
        return model

    def delete(self, model_id: str, now: float) -> None:
        model = self.get(model_id, now)
        del self._models[model_id]
        self._tuning.pop(model_id, None)
        self._gone[model_id] = {**self._timeline(model), "deleted_at": now}

    def cancel(self, model_id: str, operation_id: str, now: float) -> TunedModel:
        """Cancel a running create; a finished one stays as it is (cancellation is best effort)."""
        model = self.get_operation(model_id, operation_id, now)
        if model.state == CREATING:
            model.cancel(now)
            del self._tuning[model_id]
        return model

    def rescale(self, step_seconds: float, now: float) -> None:
        self._settle_due(now)
        for model in list(self._tuning.values()):
            if not model.settle(now):
                model.rescale(step_seconds, now)
                heapq.heappush(self._ends, (model.end_time, model.seq, model.id))
            else:
                del self._tuning[model.id]

    # -- introspection -------------------------------------------------------------------------------------

    @staticmethod
    def _timeline(model: TunedModel) -> dict[str, Any]:
        return {
            "created_at": model.created_at,
            "done_at": model.done_at,
            "state": model.state,
            "deleted_at": None,
        }

    def timelines(self, now: float) -> dict[str, dict[str, Any]]:
        """Per model id: created_at, done_at, state, deleted_at (deleted models included)."""
        self._settle_due(now)
        result = dict(self._gone)
        for model_id, model in self._models.items():
            result[model_id] = self._timeline(model)
        return result
