"""A job's request, checked by every rule the daemon sends by: the one check the dispatcher makes after the claim
and `tunekeeper submit` makes before it inserts anything.

It validates the request columns, loads the training data (reading a file through `files`: the daemon's data
roots, or the submitting user's own file), checks the evaluation pairs, so that bad `eval_data` makes a job
`invalid` before anything is sent, and applies the configured service's own limits (`BackendRules`). Files are
read with blocking I/O: the daemon calls `check_job` in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tunekeeper.backends.gemini.adapter import GeminiBackend
from tunekeeper.backends.port import Owner, TrainingExample, TuningRequest
from tunekeeper.backends.vertex.adapter import VertexBackend
from tunekeeper.config import Settings
from tunekeeper.datasets import DatasetError, FileOpener, load_dataset, load_eval_pairs, validate_request


class BackendRules(Protocol):
    """What a backend knows of its service's rules without calling it (a backend, or its class)."""

    @property
    def max_display_name_chars(self) -> int: ...

    def check(self, request: TuningRequest) -> None:
        """Raise InvalidRequest for what the service would refuse."""


class RequestColumns(Protocol):
    """A job's request columns, as a claimed row (`Job`) or a job about to be inserted (`NewJob`) holds them."""

    @property
    def display_name(self) -> object: ...
    @property
    def training_data(self) -> object: ...
    @property
    def training_file(self) -> object: ...
    @property
    def base_model(self) -> object: ...
    @property
    def epoch_count(self) -> object: ...
    @property
    def batch_size(self) -> object: ...
    @property
    def learning_rate(self) -> object: ...
    @property
    def learning_rate_multiplier(self) -> object: ...
    @property
    def eval_data(self) -> object: ...


def backend_rules(settings: Settings) -> BackendRules:
    """The configured service's rules, without a client (no credentials or network needed)."""
    rules: BackendRules = VertexBackend if settings.backend == "vertex" else GeminiBackend
    return rules


@dataclass(frozen=True, slots=True)
class CheckedJob:
    request: TuningRequest
    eval_pairs: list[TrainingExample]


def check_job(
    job: RequestColumns,
    *,
    settings: Settings,
    rules: BackendRules,
    owner: Owner,
    chosen_name: str | None,
    files: FileOpener,
) -> CheckedJob:
    """The job as a request the service would take, or DatasetError / InvalidRequest naming the problem."""
    checked = validate_request(
        job.display_name,
        job.epoch_count,
        job.batch_size,
        job.learning_rate,
        job.learning_rate_multiplier,
        chosen_name,
        max_display_name_chars=rules.max_display_name_chars,
    )
    training_file = job.training_file
    if training_file is not None and not isinstance(training_file, str):
        raise DatasetError(f"training_file must be a path, got {type(training_file).__name__}")
    dataset = load_dataset(job.training_data, training_file, files=files)
    eval_pairs = load_eval_pairs(job.eval_data)
    base_model = job.base_model if job.base_model is not None else settings.tuning.default_base_model
    if not isinstance(base_model, str):
        raise DatasetError(f"base_model must be text, got {type(base_model).__name__}")
    request = TuningRequest(
        owner=owner,
        display_name=checked.display_name,
        dataset=dataset,
        base_model=base_model,
        epoch_count=checked.epoch_count,
        batch_size=checked.batch_size,
        learning_rate=checked.learning_rate,
        learning_rate_multiplier=checked.learning_rate_multiplier,
        chosen_name=chosen_name,
    )
    rules.check(request)
    return CheckedJob(request, eval_pairs)
