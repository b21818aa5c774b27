"""The Gemini API as a TuningBackend: the port's words mapped onto tuned models and their operations.

The job's result name is chosen by the client (`tunedModels/{chosen_name}`, fixed when the job is claimed), so
a create repeated after a lost answer meets 409 ALREADY_EXISTS. The model's `description`, which the service
keeps, carries the owner's mark: only a model whose description is exactly this job's mark is adopted.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import structlog

from tunekeeper.backends.gemini.client import GeminiClient
from tunekeeper.backends.gemini.types import (
    MAX_DISPLAY_NAME_CHARS,
    MAX_INPUT_CHARS,
    MAX_OUTPUT_CHARS,
    CreateTunedModelRequest,
    ModelState,
    Operation,
    Snapshot,
    TunedModel,
)
from tunekeeper.backends.googleapi.errors import AlreadyExists, InvalidArgument, NotFound
from tunekeeper.backends.port import (
    Conversation,
    Dataset,
    InvalidRequest,
    LossPoint,
    NotOurs,
    OwnedModel,
    Owner,
    Progress,
    RemoteRef,
    RemoteState,
    Started,
    Status,
    TrainingExample,
    TuningBackend,
    TuningRequest,
)

log = structlog.get_logger(__name__)

MODEL_PREFIX = "tunedModels/"
# The shapes of the names a job's row may hold; a name read back from a row is checked before it is sent.
_TUNED_MODEL = re.compile(r"tunedModels/[A-Za-z0-9][A-Za-z0-9_-]*")
_OPERATION = re.compile(r"(tunedModels/[A-Za-z0-9][A-Za-z0-9_-]*)/operations/[A-Za-z0-9][A-Za-z0-9_-]*")
CANCELLED_CODE = 1  # google.rpc.Code CANCELLED: what a cancelled operation's error carries


class GeminiBackend:
    kind = "gemini"
    max_display_name_chars = MAX_DISPLAY_NAME_CHARS

    def __init__(self, client: GeminiClient, deployment: str) -> None:
        self.client = client
        self.deployment = deployment

    async def __aenter__(self) -> GeminiBackend:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.client.__aexit__(None, None, None)

    @staticmethod
    def check(request: TuningRequest) -> None:
        """What the Gemini API would refuse, found before anything is sent (InvalidRequest). Static: `submit`
        applies it with no client."""
        base_model = request.base_model
        if base_model is None or not base_model.startswith(("models/", MODEL_PREFIX)):
            raise InvalidRequest(f"base_model must name a model like 'models/...', got {base_model!r}")
        if request.chosen_name is None:
            raise InvalidRequest("the job has no tuned_model_id")
        training_pairs(request.dataset)

    async def start(self, request: TuningRequest) -> Started:
        # `check` has accepted the request (the dispatcher runs it, off the event loop for large data): what
        # remains is to turn its examples into the pairs the create sends.
        if request.chosen_name is None or request.base_model is None:
            raise InvalidRequest("the request has no tuned_model_id or base_model: it was not checked")
        create = CreateTunedModelRequest(
            tuned_model_id=request.chosen_name,
            display_name=request.display_name,
            base_model=request.base_model,
            examples=training_pairs(request.dataset),
            epoch_count=request.epoch_count,
            batch_size=request.batch_size,
            learning_rate=request.learning_rate,
            learning_rate_multiplier=request.learning_rate_multiplier,
            description=request.owner.mark,
        )
        try:
            operation = await self.client.create_tuned_model(create)
        except AlreadyExists:
            # An earlier attempt may have created it (its answer was lost, or its replica died): adopt it,
            # but only if it is provably this job's.
            return await self._adopt(request.owner, MODEL_PREFIX + request.chosen_name)
        return Started(operation.name, operation.tuned_model_name, operation.progress.total_steps or None, False)

    async def _adopt(self, owner: Owner, model_name: str) -> Started:
        model = await self.client.get_tuned_model(model_name)
        if Owner.from_mark(model.description) != owner:
            raise NotOurs(
                f"{model_name} already exists and is not this job's (it carries no mark of this deployment and "
                "job): set another tuned_model_id, or gemini.model_id_prefix"
            )
        operations = await self.client.find_operations(model_name)
        running = [op for op in operations if not op.done]
        chosen = running[-1] if running else (operations[-1] if operations else None)
        log.info(
            "model_adopted", tuned_model=model_name, operation=chosen.name if chosen else None, found=len(operations)
        )
        if chosen is None:  # the service no longer lists its operation: the model's own state is all there is
            return Started(None, model_name, None, True)
        return Started(chosen.name, model_name, chosen.progress.total_steps or None, True)

    async def status(self, ref: RemoteRef) -> Status:
        _check_names(ref)
        if ref.handle is None:  # adopted without a listed operation
            return _model_status(await self.client.get_tuned_model(self._model_name(ref)))
        operation = await self.client.get_operation(ref.handle)
        if not operation.done:
            return Status(RemoteState.RUNNING, _progress(operation))
        if operation.error is not None:
            error = f"{operation.error.message} (code {operation.error.code})"
            state = RemoteState.CANCELLED if operation.error.code == CANCELLED_CODE else RemoteState.FAILED
            return Status(state, _progress(operation), error=error)
        model = operation.model or await self.client.get_tuned_model(operation.tuned_model_name)
        return _model_status(model)

    async def cancel(self, ref: RemoteRef, *, wait: bool = True) -> None:
        # An operation's cancel takes effect at once (it is done, with error CANCELLED): nothing to wait for.
        _check_names(ref)
        if ref.handle is not None:
            names = [ref.handle]
        else:  # the submitter vanished mid-create: find what it may have started, if it is ours
            model_name = self._model_name(ref)
            try:
                if not await self._is_ours(ref.owner, model_name):
                    return
                names = [op.name for op in await self.client.find_operations(model_name) if not op.done]
            except NotFound:
                return
        for name in names:
            try:
                await self.client.cancel_operation(name)
            except (NotFound, InvalidArgument) as exc:  # gone, or already finished: nothing left to stop
                log.info("operation_not_cancelled", job_id=ref.owner.job_id, operation=name, reason=str(exc))

    async def remove(self, ref: RemoteRef) -> None:
        _check_names(ref)
        model_name = self._model_name(ref)
        if ref.model is None and not await self._is_ours(ref.owner, model_name):
            raise NotFound(f"no model of this job at {model_name}")
        await self.client.delete_tuned_model(model_name)

    async def generate(self, model: str, prompt: str) -> str:
        if not _TUNED_MODEL.fullmatch(model):
            raise NotOurs(f"tuned_model_name {model!r} is not a tuned model (tunedModels/ID): nothing was sent")
        return await self.client.generate_text(model, prompt)

    async def check_access(self) -> None:
        await anext(self.client.list_tuned_models(page_size=1), None)  # the first page: one request

    async def owned(self) -> AsyncIterator[OwnedModel]:
        async for model in self.client.list_tuned_models():
            owner = Owner.from_mark(model.description)
            if owner is not None and owner.deployment == self.deployment:
                yield OwnedModel(model.name, owner)

    async def _is_ours(self, owner: Owner, model_name: str) -> bool:
        return Owner.from_mark((await self.client.get_tuned_model(model_name)).description) == owner

    @staticmethod
    def _model_name(ref: RemoteRef) -> str:
        if ref.model is not None:
            return ref.model
        if ref.chosen_name is None:
            raise NotFound("the job never had a tuned model name")
        return MODEL_PREFIX + ref.chosen_name


def _check_names(ref: RemoteRef) -> None:
    """NotOurs unless the names the job's row holds are the shapes this job's work has: its model is
    `tunedModels/{tuned_model_id}` and its operation one of that model's. A row whose columns were written by
    someone else fails on its own, and nothing is sent."""
    expected = MODEL_PREFIX + ref.chosen_name if ref.chosen_name is not None else None
    model = ref.model
    if model is not None and (not _TUNED_MODEL.fullmatch(model) or (expected is not None and model != expected)):
        raise NotOurs(f"tuned_model_name {model!r} is not this job's model ({expected or 'tunedModels/ID'})")
    if ref.handle is not None:
        found = _OPERATION.fullmatch(ref.handle)
        if found is None or found.group(1) != (model or expected or found.group(1)):
            raise NotOurs(f"operation_name {ref.handle!r} is not an operation of this job's model")


def training_pairs(dataset: Dataset) -> tuple[TrainingExample, ...]:
    """The dataset as the Gemini API takes it: text_input/output pairs within its limits, sent in the request.
    A conversation that is one exchange without a system instruction is a pair; anything more, InvalidRequest."""
    if dataset.uri is not None:
        raise InvalidRequest(
            f"{dataset.source}: the Gemini API takes its examples in the request; "
            'a training file in Cloud Storage needs backend = "vertex"'
        )
    pairs: list[TrainingExample] = []
    for index, example in enumerate(dataset.examples):
        if isinstance(example, Conversation):
            pair = example.as_pair()
            if pair is None:
                system = " and a system instruction" if example.system_instruction else ""
                raise dataset.problem(
                    index,
                    f"a conversation of {len(example.turns)} turns{system}: the Gemini API tunes on single "
                    "text_input/output exchanges only (multi-turn examples and system instructions need "
                    'backend = "vertex")',
                )
            example = pair
        if len(example.text_input) > MAX_INPUT_CHARS:
            raise dataset.problem(
                index, f"text_input is {len(example.text_input):,} characters; the limit is {MAX_INPUT_CHARS:,}"
            )
        if len(example.output) > MAX_OUTPUT_CHARS:
            raise dataset.problem(
                index, f"output is {len(example.output):,} characters; the limit is {MAX_OUTPUT_CHARS:,}"
            )
        pairs.append(example)
    return tuple(pairs)


def _losses(snapshots: tuple[Snapshot, ...]) -> tuple[LossPoint, ...]:
    return tuple(LossPoint(s.step, s.epoch, s.mean_loss) for s in snapshots)


def _progress(operation: Operation) -> Progress:
    progress = operation.progress
    return Progress(
        progress.total_steps, progress.completed_steps, progress.completed_percent, _losses(progress.snapshots)
    )


def _model_status(model: TunedModel) -> Status:
    if model.state is ModelState.FAILED:
        return Status(RemoteState.FAILED, error=f"the service reports {model.name} FAILED")
    if model.state is ModelState.ACTIVE:
        losses = _losses(model.snapshots)
        return Status(RemoteState.SUCCEEDED, Progress(percent=100.0, losses=losses), model=model.name)
    return Status(RemoteState.RUNNING, None)


if TYPE_CHECKING:
    _implements_port: type[TuningBackend] = GeminiBackend  # mypy proves the adapter fits the port
