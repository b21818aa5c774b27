"""Vertex AI as a TuningBackend: the port's words mapped onto tuning jobs, Cloud Storage, models and endpoints.

The service chooses a tuning job's id, so no retry can meet "already exists". Exactly once rests on labels
instead: every tuning job carries `tunekeeper-deployment` and `tunekeeper-job` (the owner's mark), and `start`
looks for a job with this owner's labels before it creates one. A create is never retried blindly: when its
answer is lost the error goes up, and the job's next attempt finds the job the create made, if it made one.

Training data is written as Vertex JSON Lines (`contents` with a user and a model turn per example) to
`{staging_uri}/{deployment}/{job id}/train.jsonl`: one path per database and job, so a retried upload replaces
its own file and never another job's, and `remove` knows what to delete without the row telling it.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TYPE_CHECKING

import structlog

from tunekeeper.backends.googleapi.errors import FailedPrecondition, NotFound, PermanentError, TransientError
from tunekeeper.backends.port import (
    Conversation,
    Dataset,
    Example,
    InvalidRequest,
    NotOurs,
    OwnedModel,
    Owner,
    Progress,
    RemoteRef,
    RemoteState,
    Started,
    Status,
    TuningBackend,
    TuningRequest,
)
from tunekeeper.backends.vertex.auth import GoogleTokens
from tunekeeper.backends.vertex.client import VertexClient
from tunekeeper.backends.vertex.storage import MAX_UPLOAD_BYTES, parse_gs_uri
from tunekeeper.backends.vertex.types import (
    MAX_DISPLAY_NAME_CHARS,
    AdapterSize,
    JobState,
    TuningJob,
    TuningJobSpec,
)

log = structlog.get_logger(__name__)

DEPLOYMENT_LABEL = "tunekeeper-deployment"
JOB_LABEL = "tunekeeper-job"
TRAINING_FILE = "train.jsonl"
# Vertex's published limit is 131,072 tokens per example (system instruction and every turn); the daemon cannot
# count tokens, so it counts roughly four characters a token, as the emulator does.
MAX_EXAMPLE_TOKENS = 131_072
CHARS_PER_TOKEN = 4
_RUNNING_STATES = frozenset(
    {JobState.QUEUED, JobState.PENDING, JobState.RUNNING, JobState.CANCELLING, JobState.PAUSED, JobState.UPDATING}
)
# How long `cancel` waits for a cancelled tuning job to end (Vertex cancels asynchronously: CANCELLING first),
# and how often it looks meanwhile: the first look soon, later ones further apart.
CANCEL_WAIT_SECONDS = 30.0
CANCEL_POLL_FIRST = 0.05
CANCEL_POLL_MAX = 2.0
_SUB_STATE_PREFIX = "TUNING_JOB_STATE_"
_JOB_STATE_PREFIX = "JOB_STATE_"


def owner_labels(owner: Owner) -> dict[str, str]:
    return {DEPLOYMENT_LABEL: owner.deployment, JOB_LABEL: str(owner.job_id)}


def owner_of(job: TuningJob) -> Owner | None:
    """The mark a tuning job carries, read from its labels (None when it carries none)."""
    deployment, job_id = job.labels.get(DEPLOYMENT_LABEL), job.labels.get(JOB_LABEL)
    if not deployment or not job_id or not job_id.isdigit():
        return None
    return Owner(deployment, int(job_id))


def _vertex_example(example: Example) -> dict[str, object]:
    """One example as a line of Vertex JSON Lines: `contents` (a pair is one user turn and one model turn) and,
    where the example has one, `systemInstruction`."""
    if not isinstance(example, Conversation):
        return {
            "contents": [
                {"role": "user", "parts": [{"text": example.text_input}]},
                {"role": "model", "parts": [{"text": example.output}]},
            ]
        }
    line: dict[str, object] = {}
    if example.system_instruction:
        line["systemInstruction"] = {"parts": [{"text": text} for text in example.system_instruction]}
    line["contents"] = [{"role": turn.role, "parts": [{"text": text} for text in turn.parts]} for turn in example.turns]
    return line


def training_jsonl(dataset: Dataset) -> bytes:
    """The examples as Vertex JSON Lines, one example per line."""
    lines = (json.dumps(_vertex_example(example), ensure_ascii=False) for example in dataset.examples)
    return ("\n".join(lines) + "\n").encode()


def _characters(example: Example) -> int:
    if isinstance(example, Conversation):
        return example.characters
    return len(example.text_input) + len(example.output)


class VertexBackend:
    kind = "vertex"
    max_display_name_chars = MAX_DISPLAY_NAME_CHARS

    def __init__(
        self,
        client: VertexClient,
        deployment: str,
        *,
        staging_uri: str,
        adapter_size: str = "",
        labels: Mapping[str, str] | None = None,
        tokens: GoogleTokens | None = None,
        cancel_wait: float = CANCEL_WAIT_SECONDS,
    ) -> None:
        self.client = client
        self._tokens = tokens  # closed with the backend: its token requests' session
        self.deployment = deployment
        self._staging = staging_uri.rstrip("/")
        self._adapter_size = AdapterSize(adapter_size) if adapter_size else None
        self._labels = dict(labels or {})
        self._cancel_wait = cancel_wait
        # Names read back from a job's row must be this location's (the service may spell the project by its
        # number where the settings give its id, so the project is not compared); anything else is never sent.
        parent = rf"projects/[a-z0-9][a-z0-9.:-]*/locations/{re.escape(client.location)}"
        self._tuning_job_name = re.compile(rf"{parent}/tuningJobs/[0-9]+")
        self._endpoint_name = re.compile(rf"{parent}/endpoints/[a-z0-9][a-z0-9-]*")

    async def __aenter__(self) -> VertexBackend:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.client.__aexit__(None, None, None)
        finally:
            if self._tokens is not None:
                await self._tokens.close()

    def staged_uri(self, owner: Owner) -> str:
        return f"{self._staging}/{owner.deployment}/{owner.job_id}/{TRAINING_FILE}"

    @staticmethod
    def check(request: TuningRequest) -> None:
        """What Vertex AI would refuse, before anything is sent. Static: `submit` applies it with no client."""
        if not request.base_model:
            raise InvalidRequest("base_model is empty: name a Vertex AI base model such as 'gemini-2.5-flash'")
        if len(request.display_name) > MAX_DISPLAY_NAME_CHARS:
            raise InvalidRequest(
                f"display_name has {len(request.display_name)} characters; Vertex AI allows {MAX_DISPLAY_NAME_CHARS}"
            )
        if request.batch_size is not None or request.learning_rate is not None:
            raise InvalidRequest(
                "batch_size and learning_rate are not settings of Vertex AI tuning: "
                "use epoch_count and learning_rate_multiplier"
            )
        VertexBackend._check_dataset(request.dataset)

    @staticmethod
    def _check_dataset(dataset: Dataset) -> None:
        """Vertex AI's limits on training data ("Training data in Cloud Storage" in VERTEX-FACTS.md), before
        anything is uploaded: the messages name the example, never its text."""
        if dataset.uri is not None:
            try:
                parse_gs_uri(dataset.uri)
            except ValueError:
                raise InvalidRequest(f"{dataset.source}: not a Cloud Storage object, gs://bucket/object") from None
            return
        if not dataset.examples:
            raise InvalidRequest(f"{dataset.source}: no examples")
        for index, example in enumerate(dataset.examples):
            characters = _characters(example)
            tokens = math.ceil(characters / CHARS_PER_TOKEN)
            if tokens > MAX_EXAMPLE_TOKENS:
                raise dataset.problem(
                    index,
                    f"about {tokens:,} tokens ({characters:,} characters at {CHARS_PER_TOKEN} a token); "
                    f"Vertex AI takes at most {MAX_EXAMPLE_TOKENS:,} tokens per example",
                )
        size = len(training_jsonl(dataset))
        if size > MAX_UPLOAD_BYTES:
            raise InvalidRequest(
                f"{dataset.source}: {size:,} bytes as JSON Lines, more than the {MAX_UPLOAD_BYTES:,} the daemon "
                "uploads; put the file in Cloud Storage and set training_file to its gs:// URI"
            )

    async def start(self, request: TuningRequest) -> Started:
        # `check` has accepted the request (the dispatcher runs it, off the event loop for large data).
        if request.base_model is None:
            raise InvalidRequest("the request has no base_model: it was not checked")
        owner, dataset = request.owner, request.dataset
        # Data already in Cloud Storage is used where it is: never copied, and never deleted (it is not ours).
        training_uri = dataset.uri or self.staged_uri(owner)
        earlier = await self._find(owner)
        if earlier is not None:  # an earlier attempt's create landed (its answer was lost, or its replica died)
            log.info("model_adopted", tuned_model=None, operation=earlier.name, found=1)
            return Started(earlier.name, None, earlier.total_steps, True, training_uri)
        if dataset.uri is not None:
            if await self.client.storage.stat(dataset.uri) is None:
                raise InvalidRequest(f"{dataset.source}: no such object in Cloud Storage (or no such bucket)")
        else:
            await self.client.storage.upload(training_uri, training_jsonl(dataset), "application/jsonl")
        spec = TuningJobSpec(
            base_model=request.base_model,
            display_name=request.display_name,
            training_uri=training_uri,
            epoch_count=request.epoch_count,
            learning_rate_multiplier=request.learning_rate_multiplier,
            adapter_size=self._adapter_size,
            labels={**self._labels, **owner_labels(owner)},
            description=owner.mark,
        )
        job = await self.client.create_tuning_job(spec)
        return Started(job.name, None, job.total_steps, False, training_uri)

    async def status(self, ref: RemoteRef) -> Status:
        job = await self._job(ref)
        if job is None:
            raise NotFound(f"no tuning job of this job ({ref.owner.mark}) on the service")
        if job.state in _RUNNING_STATES:
            return Status(RemoteState.RUNNING, _progress(job), detail=_detail(job))
        if job.state is JobState.CANCELLED:
            return Status(RemoteState.CANCELLED, error=_error(job, "the tuning job was cancelled"))
        if job.tuned_model is not None and job.state in (JobState.SUCCEEDED, JobState.PARTIALLY_SUCCEEDED):
            done = Progress(job.total_steps or 0, job.total_steps or 0, 100.0)
            return Status(RemoteState.SUCCEEDED, done, model=job.tuned_model.model, endpoint=job.tuned_model.endpoint)
        return Status(RemoteState.FAILED, error=_error(job, f"the tuning job ended {job.state.value}"))

    async def cancel(self, ref: RemoteRef, *, wait: bool = True) -> None:
        if ref.handle is not None:
            jobs = [job] if (job := await self._job(ref)) is not None else []
        else:  # the submitter vanished mid-create: what it may have started carries the job's labels
            jobs = [job async for job in self._labelled(ref.owner)]
        stopping = []
        for job in jobs:
            if job.state.ended:
                continue
            try:
                await self.client.cancel_tuning_job(job.name)
            except (NotFound, FailedPrecondition) as exc:  # gone, or already ended: nothing left to stop
                log.info("operation_not_cancelled", job_id=ref.owner.job_id, operation=job.name, reason=str(exc))
                continue
            stopping.append(job.name)
        # Vertex cancels asynchronously (CANCELLING, then CANCELLED) and only on a best-effort basis: a job may
        # still end SUCCEEDED. What `remove` finds is final only once the job has ended, so wait for that.
        for name in stopping if wait else ():
            await self._until_ended(name, ref.owner)

    async def _until_ended(self, name: str, owner: Owner) -> None:
        """Wait, at most `cancel_wait` seconds, until the tuning job has ended; TransientError if it has not
        (the canceller tries again later)."""
        deadline = time.monotonic() + self._cancel_wait
        pause = CANCEL_POLL_FIRST
        while True:
            try:
                job = await self.client.get_tuning_job(name)
            except NotFound:
                return
            if job.state.ended:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransientError(
                    f"tuning job {name} of job {owner.job_id} is still {job.state.value} {self._cancel_wait:g} s "
                    "after its cancel"
                )
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, CANCEL_POLL_MAX)

    async def remove(self, ref: RemoteRef) -> None:
        """Undeploy and delete the endpoint, delete the model, delete the staged training file.

        A delete the service refuses (a PermanentError) does not stop the others: everything that can go goes,
        then the first refusal is raised. Transient errors are raised at once (the caller tries again later)."""
        job = await self._job(ref)
        refusals: list[PermanentError] = []
        removed = False
        if job is not None and job.tuned_model is not None:
            removed |= await _refusal_kept(self._remove_endpoint(job.tuned_model.endpoint), refusals)
            removed |= await _refusal_kept(_gone_is_false(self.client.delete_model(job.tuned_model.model)), refusals)
        removed |= await _refusal_kept(_gone_is_false(self.client.storage.delete(self.staged_uri(ref.owner))), refusals)
        if refusals:
            raise refusals[0]
        if not removed:
            raise NotFound(f"nothing of this job ({ref.owner.mark}) remains on the service")

    async def generate(self, model: str, prompt: str) -> str:
        if not self._endpoint_name.fullmatch(model):
            raise NotOurs(
                f"tuned_endpoint_name {model!r} is not an endpoint in {self.client.location} "
                "(projects/.../locations/.../endpoints/ID): nothing was sent"
            )
        return await self.client.generate_text(model, prompt)

    async def check_access(self) -> None:
        await anext(self.client.list_tuning_jobs(page_size=1), None)  # the first page: one request

    async def owned(self) -> AsyncIterator[OwnedModel]:
        async for job in self.client.list_tuning_jobs(filter=f'labels.{DEPLOYMENT_LABEL}="{self.deployment}"'):
            owner = owner_of(job)
            if owner is not None and owner.deployment == self.deployment and job.tuned_model is not None:
                yield OwnedModel(job.tuned_model.model, owner)

    async def _remove_endpoint(self, name: str) -> bool:
        try:
            endpoint = await self.client.get_endpoint(name)
        except NotFound:
            return False
        for deployed in endpoint.deployed_model_ids:  # an endpoint that serves a model cannot be deleted
            await _gone_is_false(self.client.undeploy_model(name, deployed))
        await _gone_is_false(self.client.delete_endpoint(name))
        return True

    async def _job(self, ref: RemoteRef) -> TuningJob | None:
        """The job's tuning job: by the handle its row holds (checked to carry its mark), else by its labels."""
        if ref.handle is None:
            return await self._find(ref.owner)
        if not self._tuning_job_name.fullmatch(ref.handle):
            raise NotOurs(
                f"operation_name {ref.handle!r} is not a tuning job in {self.client.location} "
                "(projects/.../locations/.../tuningJobs/ID): nothing was sent"
            )
        try:
            job = await self.client.get_tuning_job(ref.handle)
        except NotFound:
            return None
        if owner_of(job) != ref.owner:
            raise NotOurs(f"{job.name} does not carry this job's labels: it is not this job's tuning job")
        return job

    async def _find(self, owner: Owner) -> TuningJob | None:
        """This owner's tuning job, if one exists: the running one, else the newest."""
        found = [job async for job in self._labelled(owner)]
        if not found:
            return None
        if len(found) > 1:
            log.warning("tuning_jobs_duplicated", job_id=owner.job_id, tuning_jobs=[job.name for job in found])
        running = [job for job in found if not job.state.ended]
        return (running or found)[-1]

    async def _labelled(self, owner: Owner) -> AsyncIterator[TuningJob]:
        labels = owner_labels(owner)
        query = " AND ".join(f'labels.{key}="{value}"' for key, value in labels.items())
        async for job in self.client.list_tuning_jobs(filter=query):
            if owner_of(job) == owner:  # the service's filter is not trusted with ownership
                yield job


async def _refusal_kept(call: Awaitable[bool], refusals: list[PermanentError]) -> bool:
    """Await one removal step; a refusal is added to `refusals` (and counts as nothing removed)."""
    try:
        return await call
    except PermanentError as exc:
        refusals.append(exc)
        return False


async def _gone_is_false(call: Awaitable[object]) -> bool:
    """Await a delete; True if it deleted something, False if there was nothing to delete."""
    try:
        await call
    except NotFound:
        return False
    return True


def _progress(job: TuningJob) -> Progress:
    total, done = job.total_steps or 0, job.completed_steps or 0
    return Progress(total, done, round(done * 100.0 / total, 3) if total else 0.0)


def _detail(job: TuningJob) -> str | None:
    if job.sub_state is not None and job.sub_state.value != "TUNING_JOB_STATE_UNSPECIFIED":
        return job.sub_state.value.removeprefix(_SUB_STATE_PREFIX)
    if job.state is not JobState.RUNNING:
        return job.state.value.removeprefix(_JOB_STATE_PREFIX)
    return None


def _error(job: TuningJob, fallback: str) -> str:
    if job.error is None:
        return fallback
    return f"{job.error.message} (code {job.error.code})"


if TYPE_CHECKING:
    _implements_port: type[TuningBackend] = VertexBackend  # mypy proves the adapter fits the port
