"""The backend port: what the daemon needs from a tuning service, in the daemon's own words.

Each service has an adapter in a package beside this module (`gemini/`, `vertex/`); the daemon, the store and
the commands know only this module. A service's shapes (operations, tuned-model ids, tuning jobs, endpoints,
buckets) stay inside its adapter.

Exactly once, by ownership. Every piece of remote work carries a mark, `Owner`, that names this deployment
(the database's identity, made with its schema) and the job. `start` is idempotent per owner: when the service
already has work for the job (an earlier attempt whose answer was lost, a replica that died mid-create), the
adapter adopts it, but only if it provably carries this owner's mark; work under the job's name that carries
another mark raises `NotOurs`, a permanent failure of that job, never an adoption. `owned` lists what carries
this deployment's mark, which is how orphans are found without guessing from names.

Errors are those of `backends.googleapi.errors`: TransientError (try again later) or PermanentError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

from tunekeeper.backends.googleapi.errors import PermanentError

MARK_PREFIX = "tunekeeper"


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose remote work this is: a deployment (one database) and one of its jobs."""

    deployment: str  # the database's identity: 32 lowercase hex digits
    job_id: int

    @property
    def mark(self) -> str:
        """The text form an adapter attaches where its service keeps it (a description, a label)."""
        return f"{MARK_PREFIX}:{self.deployment}:{self.job_id}"

    @classmethod
    def from_mark(cls, text: str | None) -> Owner | None:
        """The owner a mark names, or None when `text` is not a mark."""
        prefix, _, rest = (text or "").partition(":")
        deployment, _, job = rest.partition(":")
        if prefix != MARK_PREFIX or not deployment or not job.isdigit():
            return None
        return cls(deployment, int(job))


class NotOurs(PermanentError):
    """The service holds work under this job's name that does not carry this job's mark."""

    def __init__(self, message: str) -> None:
        super().__init__(message, http_status=None, status="NOT_OURS")


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """One training or evaluation pair: the prompt and the answer the tuned model should give."""

    text_input: str
    output: str


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of a conversation: who speaks, and the text parts of what is said."""

    role: Literal["user", "model"]
    parts: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass(frozen=True, slots=True)
class Conversation:
    """A training example as a conversation: turns that alternate, starting with the user and ending with the
    model, and an optional system instruction (its text parts; empty for none). Vertex AI's `contents` form."""

    turns: tuple[Turn, ...]
    system_instruction: tuple[str, ...] = ()

    @property
    def characters(self) -> int:
        return sum(len(part) for part in self.system_instruction) + sum(
            len(part) for turn in self.turns for part in turn.parts
        )

    def as_pair(self) -> TrainingExample | None:
        """The same example as a text_input/output pair, if it is one: a single exchange, no system instruction."""
        if len(self.turns) != 2 or self.system_instruction:
            return None
        return TrainingExample(self.turns[0].text, self.turns[1].text)


Example = TrainingExample | Conversation


class InvalidRequest(ValueError):
    """A request the service would refuse (checked before anything is sent); the message names the problem."""


@dataclass(frozen=True, slots=True)
class Dataset:
    """A job's training data: examples to send, or data already in place where the service reads it.

    `source` names it in messages the way the producer gave it ("training_data", "training_file /srv/x.jsonl"),
    so that every check, whoever makes it, reports an example the same way: `training_data: example 3: ...`.
    """

    source: str
    examples: tuple[Example, ...] = ()
    # Per example, the line of the file it came from (files only; empty otherwise).
    lines: tuple[int, ...] = ()
    # Data already in the service's storage (Vertex AI: gs://bucket/object): used in place, never copied, never
    # deleted (it is not ours). `examples` is then empty: the daemon does not read it.
    uri: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "examples", tuple(self.examples))
        object.__setattr__(self, "lines", tuple(self.lines))

    def where(self, index: int) -> str:
        """The prefix of a message about example `index` (0-based)."""
        line = f"line {self.lines[index]}: " if index < len(self.lines) else ""
        return f"{self.source}: {line}example {index}: "

    def problem(self, index: int, text: str) -> InvalidRequest:
        return InvalidRequest(self.where(index) + text)


@dataclass(frozen=True, slots=True)
class TuningRequest:
    """A checked request to tune. Fields left None take the service's (or the adapter's configured) defaults."""

    owner: Owner
    display_name: str
    dataset: Dataset
    base_model: str | None = None
    epoch_count: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    learning_rate_multiplier: float | None = None
    # A name the job fixed for its result when it was claimed, where the service lets a client choose one
    # (the Gemini API's tuned-model id); None elsewhere.
    chosen_name: str | None = None


@dataclass(frozen=True, slots=True)
class RemoteRef:
    """Where a job's remote work is, as far as its row knows: what `start` answered, and the job's mark."""

    owner: Owner
    handle: str | None  # what the service runs the tuning as (an operation, a tuning job); None if not known
    model: str | None  # the tuned model's name, once known
    chosen_name: str | None = None  # as in TuningRequest


@dataclass(frozen=True, slots=True)
class Started:
    handle: str | None  # None: adopted work whose handle the service no longer lists (status goes by model)
    model: str | None  # the result's name when the service tells it at once
    total_steps: int | None
    adopted: bool  # True when earlier work of this owner was found and taken up instead of starting anew
    training_uri: str | None = None  # the training file the service reads, where it reads one


class RemoteState(StrEnum):
    RUNNING = "running"  # queued, pending, running or being cancelled at the service: not over yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class LossPoint:
    step: int
    epoch: int
    mean_loss: float


@dataclass(frozen=True, slots=True)
class Progress:
    total_steps: int = 0  # 0: not known yet
    completed_steps: int = 0
    percent: float = 0.0
    losses: tuple[LossPoint, ...] = ()  # one point per finished epoch, where the service reports loss


@dataclass(frozen=True, slots=True)
class Status:
    state: RemoteState
    progress: Progress | None = None  # None: the service said nothing of progress this time
    detail: str | None = None  # the service's finer state while running (e.g. WAITING_FOR_QUOTA)
    model: str | None = None  # on success: the tuned model's name (what remove deletes)
    endpoint: str | None = None  # on success, where the model is served elsewhere: the name to generate with
    error: str | None = None  # on failure or cancellation: the service's message


@dataclass(frozen=True, slots=True)
class OwnedModel:
    """A tuned model on the service that carries this deployment's mark."""

    name: str
    owner: Owner


class TuningBackend(Protocol):
    """One tuning service, spoken in the daemon's terms. Implementations are async context managers."""

    kind: str  # "gemini" or "vertex": recorded on each job the backend runs
    max_display_name_chars: int  # the service's limit on a display name (the Gemini API's 40, Vertex AI's 128)

    async def __aenter__(self) -> TuningBackend: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    def check(self, request: TuningRequest) -> None:
        """Raise InvalidRequest, naming the problem, if the service would refuse the request."""
        ...

    async def start(self, request: TuningRequest) -> Started:
        """Start tuning a request `check` accepted, or adopt this owner's earlier work (see the module
        docstring); NotOurs if the job's name is taken by someone else's work."""
        ...

    async def status(self, ref: RemoteRef) -> Status:
        """Where the work stands. NotFound if the service no longer knows it."""
        ...

    async def cancel(self, ref: RemoteRef, *, wait: bool = True) -> None:
        """Stop the work, finding it by its mark when the row never learned its handle, and (with `wait`) return
        once it has ended, so that a `remove` after it finds what the work finally left. Work that already ended,
        or that the service no longer knows, needs no cancelling: that is not an error. TransientError if the
        work has not ended within the adapter's bounded wait (the caller tries again later)."""
        ...

    async def remove(self, ref: RemoteRef) -> None:
        """Delete what the job left on the service (the model, and what serves or feeds it). NotFound if nothing
        of this job's was there: whether "already gone" is fine is the caller's call."""
        ...

    async def generate(self, model: str, prompt: str) -> str:
        """The tuned model's answer to one prompt; `model` is the status's endpoint, or its model if none."""
        ...

    async def check_access(self) -> None:
        """One cheap authenticated read: PermissionDenied if the service refuses the credentials, TransientError
        if it cannot answer now."""
        ...

    def owned(self) -> AsyncIterator[OwnedModel]:
        """Every tuned model on the service that carries this deployment's mark."""
        ...
