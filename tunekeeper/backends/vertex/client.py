"""The Vertex AI tuning client: tuning jobs, the endpoints and models they leave, and Cloud Storage for their
data. One aiohttp session, OAuth tokens from a TokenSource, typed results, typed errors, retries with backoff."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import TypeVar

import aiohttp

from tunekeeper.backends.googleapi import read
from tunekeeper.backends.googleapi.errors import (
    MalformedResponse,
    PermanentError,
    ServiceError,
    refine_precondition,
)
from tunekeeper.backends.googleapi.observer import RequestObserver
from tunekeeper.backends.googleapi.retry import RetryPolicy
from tunekeeper.backends.googleapi.tokens import TokenSource
from tunekeeper.backends.googleapi.transport import Transport, client_session
from tunekeeper.backends.vertex.parse import (
    parse_endpoint,
    parse_generated_text,
    parse_operation,
    parse_tuning_job,
    parse_tuning_job_page,
)
from tunekeeper.backends.vertex.storage import DEFAULT_STORAGE_URL, CloudStorage
from tunekeeper.backends.vertex.types import Endpoint, JsonObject, Operation, TuningJob, TuningJobSpec

T = TypeVar("T")
API_VERSIONS = ("v1", "v1beta1")
MAX_PAGE_SIZE = 1000
# Resource names go into URL paths: accept only their documented shapes, so that no name (a database row's,
# a service answer's) can reach another path or host. No segment may hold '/', '?', '#', '%' or be '..'.
_PARENT = r"projects/[a-z0-9][a-z0-9.:-]*/locations/[a-z][a-z0-9-]*"
_TUNING_JOB_NAME = re.compile(rf"{_PARENT}/tuningJobs/\d+")
_ENDPOINT_NAME = re.compile(rf"{_PARENT}/endpoints/[a-z0-9][a-z0-9-]*")
_MODEL_NAME = re.compile(rf"{_PARENT}/models/[a-z0-9][a-z0-9-]*(@[a-z0-9][a-z0-9_-]*)?")
_OPERATION_NAME = re.compile(rf"{_PARENT}(/(endpoints|models)/[a-z0-9][a-z0-9-]*)?/operations/\d+")
_PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]*")
_LOCATION = re.compile(r"[a-z][a-z0-9-]*")
# The google.rpc.Code names, for a failed long-running operation's error.
_RPC_CODES = (
    *("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS"),
    *("PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE"),
    *("UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"),
)


class OperationFailed(PermanentError):
    """A long-running operation (undeploy, delete) ended with an error; `status` is its google.rpc.Code name."""

    @property
    def label(self) -> str:
        return "operation_failed"


def default_base_url(location: str) -> str:
    """Vertex AI's regional host, or the global one for `global`."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


class VertexClient:
    """Client of Vertex AI's tuning jobs, endpoints and models, and of Cloud Storage (`client.storage`).

    Use as `async with VertexClient(project=..., location=..., tokens=...) as client:`. Every method retries
    transient errors (429, 5xx, connection trouble, malformed responses) up to `retry.max_retries` times and
    then raises the last `TransientError`; anything else raises a `PermanentError` subclass at once, with
    `FailedPrecondition` for a request the resource's state forbids and `Unauthenticated` when even a fresh
    token is refused. `api_version` v1beta1 (the default) also reports the sub-state and progress of a job.

    Undeploy and delete answer long-running operations: the client polls an unfinished one for up to
    `operation_timeout` seconds and returns it as it then is (`done` False if it is still running); a finished
    one that failed raises `OperationFailed`.
    """

    def __init__(
        self,
        *,
        project: str,
        location: str,
        tokens: TokenSource,
        base_url: str | None = None,
        api_version: str = "v1beta1",
        storage_url: str = DEFAULT_STORAGE_URL,
        retry: RetryPolicy | None = None,
        request_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_connections: int = 64,
        operation_timeout: float = 120.0,
        observer: RequestObserver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not _PROJECT.fullmatch(project):
            raise ValueError(f"not a valid project: {project!r}")
        if not _LOCATION.fullmatch(location):
            raise ValueError(f"not a valid location: {location!r}")
        if api_version not in API_VERSIONS:
            raise ValueError(f"api_version must be one of {', '.join(API_VERSIONS)}, not {api_version!r}")
        self._parent = f"projects/{project}/locations/{location}"
        self.location = location
        self._base_url = (base_url or default_base_url(location)).rstrip("/")
        self._storage_url = storage_url.rstrip("/")
        self._version = api_version
        self._tokens = tokens
        self._retry = retry or RetryPolicy()
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, connect=connect_timeout)
        self._max_connections = max_connections
        self._operation_timeout = operation_timeout
        self._observer = observer
        self._rng = rng
        self._session: aiohttp.ClientSession | None = None
        self._transport_or_none: Transport | None = None
        self._storage_or_none: CloudStorage | None = None

    def __repr__(self) -> str:  # configuration only: the tokens are not ours to show
        return f"VertexClient(parent={self._parent!r}, base_url={self._base_url!r}, api_version={self._version!r})"

    async def __aenter__(self) -> VertexClient:
        self._session = client_session(self._timeout, self._max_connections)
        self._transport_or_none = self._transport_for(self._base_url)
        self._storage_or_none = CloudStorage(self._transport_for(self._storage_url))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None
        self._transport_or_none = None
        self._storage_or_none = None

    def _transport_for(self, base_url: str) -> Transport:
        assert self._session is not None
        return Transport(
            self._session, base_url, retry=self._retry, tokens=self._tokens, observer=self._observer, rng=self._rng
        )

    @property
    def parent(self) -> str:
        """`projects/P/locations/L`, where this client creates and lists tuning jobs."""
        return self._parent

    @property
    def storage(self) -> CloudStorage:
        """Cloud Storage, on the same session and tokens."""
        if self._storage_or_none is None:
            raise RuntimeError("VertexClient is used outside `async with`")
        return self._storage_or_none

    # Tuning jobs

    async def create_tuning_job(self, spec: TuningJobSpec) -> TuningJob:
        """Start a tuning job; the service picks its name.

        Not idempotent: a retry after a lost answer (a 503 or a dropped connection after the job was made)
        would create a second job, so a transient failure is not retried here but raised. Callers label the
        spec and, before creating again, look for their label with `list_tuning_jobs(filter='labels.K="V"')`.
        """
        path = f"/{self._version}/{self._parent}/tuningJobs"
        return await self._call("POST", "tuningJobs.create", path, parse_tuning_job, body=spec.to_json(), retries=0)

    async def get_tuning_job(self, name: str) -> TuningJob:
        path = f"/{self._version}/{_checked(name, _TUNING_JOB_NAME)}"
        return await self._call("GET", "tuningJobs.get", path, parse_tuning_job)

    async def list_tuning_jobs(self, filter: str | None = None, page_size: int = 100) -> AsyncIterator[TuningJob]:
        """Every tuning job of this project and location (matching `filter`, e.g. `labels.k="v"` or
        `state="JOB_STATE_RUNNING"`), fetching pages as the iteration reaches them."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, not {page_size}")
        path = f"/{self._version}/{self._parent}/tuningJobs"
        base_params = {"pageSize": str(page_size)}
        if filter:
            base_params["filter"] = filter
        token: str | None = None
        seen: set[str] = set()
        while True:
            params = {**base_params, "pageToken": token} if token else base_params
            page, token = await self._call("GET", "tuningJobs.list", path, parse_tuning_job_page, params=params)
            for job in page:
                yield job
            if token is None:
                return
            if token in seen:  # a service that hands out a page token twice would page forever
                raise MalformedResponse("tuningJobs.list: page token repeated, the listing does not advance")
            seen.add(token)

    async def cancel_tuning_job(self, name: str) -> None:
        """Ask the service to cancel; it does so asynchronously (poll the job). FailedPrecondition when the job
        has already ended, NotFound when there is no such job."""
        path = f"/{self._version}/{_checked(name, _TUNING_JOB_NAME)}:cancel"
        await self._call("POST", "tuningJobs.cancel", path, _parse_cancel, body={})

    # What a succeeded job leaves: an endpoint serving a model

    async def get_endpoint(self, name: str) -> Endpoint:
        path = f"/{self._version}/{_checked(name, _ENDPOINT_NAME)}"
        return await self._call("GET", "endpoints.get", path, parse_endpoint)

    async def generate_text(self, endpoint: str, prompt: str) -> str:
        """The tuned model's answer to one text prompt: the first candidate's text ("" if there is none)."""
        path = f"/{self._version}/{_checked(endpoint, _ENDPOINT_NAME)}:generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
        return await self._call("POST", "endpoints.generateContent", path, parse_generated_text, body=body)

    async def undeploy_model(self, endpoint: str, deployed_model_id: str) -> Operation:
        """Stop the endpoint serving the deployed model (an id from `get_endpoint`); the operation."""
        if not deployed_model_id.isdigit():
            raise ValueError(f"not a deployed model id: {deployed_model_id!r}")
        path = f"/{self._version}/{_checked(endpoint, _ENDPOINT_NAME)}:undeployModel"
        body = {"deployedModelId": deployed_model_id}
        operation = await self._call("POST", "endpoints.undeployModel", path, parse_operation, body=body)
        return await self._finished(operation)

    async def delete_endpoint(self, name: str) -> Operation:
        """Delete an endpoint that serves nothing (FailedPrecondition while it still does); the operation."""
        path = f"/{self._version}/{_checked(name, _ENDPOINT_NAME)}"
        return await self._finished(await self._call("DELETE", "endpoints.delete", path, parse_operation))

    async def delete_model(self, name: str) -> Operation:
        """Delete a model that is not deployed (FailedPrecondition while it is); the operation."""
        path = f"/{self._version}/{_checked(name, _MODEL_NAME)}"
        return await self._finished(await self._call("DELETE", "models.delete", path, parse_operation))

    async def get_operation(self, name: str) -> Operation:
        path = f"/{self._version}/{_checked(name, _OPERATION_NAME)}"
        return await self._call("GET", "operations.get", path, parse_operation)

    async def _finished(self, operation: Operation) -> Operation:
        """Poll until the operation is done or `operation_timeout` passes; raise if it failed."""
        deadline = time.monotonic() + self._operation_timeout
        delay = 0.5
        while not operation.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return operation
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 10.0)
            operation = await self.get_operation(operation.name)
        if operation.error is not None:
            code = operation.error.code
            status = _RPC_CODES[code] if 0 <= code < len(_RPC_CODES) else "UNKNOWN"
            raise OperationFailed(f"{operation.name}: {operation.error.message}", status=status)
        return operation

    async def _call(
        self,
        method: str,
        route: str,
        path: str,
        parse: Callable[[object], T],
        *,
        params: Mapping[str, str] | None = None,
        body: JsonObject | None = None,
        retries: int | None = None,
    ) -> T:
        """The transport's call, with FAILED_PRECONDITION told apart from other 400s (FailedPrecondition)."""
        if self._transport_or_none is None:
            raise RuntimeError("VertexClient is used outside `async with`")
        try:
            transport = self._transport_or_none
            return await transport.call(method, route, path, parse, params=params, body=body, retries=retries)
        except ServiceError as error:
            refined = refine_precondition(error)
            if refined is error:
                raise
            raise refined from None


def _checked(name: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(name):
        raise ValueError(f"not a valid resource name here: {name!r}")
    return name


def _parse_cancel(document: object) -> None:
    read.empty(document, "cancelTuningJobResponse")
