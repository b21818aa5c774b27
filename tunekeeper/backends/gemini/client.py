"""The Gemini API tuning client: one aiohttp session, typed results, typed errors, retries with backoff."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from types import TracebackType

import aiohttp

from tunekeeper.backends.gemini.parse import (
    parse_generated_text,
    parse_operation,
    parse_operation_page,
    parse_tuned_model,
    parse_tuned_model_page,
)
from tunekeeper.backends.gemini.types import CreateTunedModelRequest, Operation, TunedModel
from tunekeeper.backends.googleapi import read
from tunekeeper.backends.googleapi.errors import MalformedResponse
from tunekeeper.backends.googleapi.observer import RequestObserver
from tunekeeper.backends.googleapi.retry import RetryPolicy
from tunekeeper.backends.googleapi.transport import Transport, client_session

MAX_PAGE_SIZE = 1000
# Resource names go into URL paths: accept only their documented shapes, so that no name can reach another path.
_TUNED_MODEL_NAME = re.compile(r"tunedModels/[A-Za-z0-9][A-Za-z0-9_-]*")
_OPERATION_NAME = re.compile(r"tunedModels/[A-Za-z0-9][A-Za-z0-9_-]*/operations/[A-Za-z0-9][A-Za-z0-9_-]*")
_MODEL_NAME = re.compile(r"(tunedModels|models)/[A-Za-z0-9][A-Za-z0-9_.-]*")


class GeminiClient:
    """Client of the Gemini API's model-tuning service (the daemon reaches it through `adapter.GeminiBackend`).

    Use as `async with GeminiClient(base_url=..., api_key=...) as client:`. Every method retries transient
    errors (429, 5xx, connection trouble, malformed responses) up to `retry.max_retries` times and then
    raises the last `TransientError`; anything else raises a `PermanentError` subclass at once.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        retry: RetryPolicy | None = None,
        request_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_connections: int = 64,
        observer: RequestObserver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._retry = retry or RetryPolicy()
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, connect=connect_timeout)
        self._max_connections = max_connections
        self._observer = observer
        self._rng = rng
        self._session: aiohttp.ClientSession | None = None
        self._transport_or_none: Transport | None = None

    def __repr__(self) -> str:  # without the key
        return f"GeminiClient(base_url={self._base_url!r})"

    async def __aenter__(self) -> GeminiClient:
        # The one place the key goes: a header of the session, never a URL.
        headers = {"x-goog-api-key": self._api_key} if self._api_key else {}
        self._session = client_session(self._timeout, self._max_connections, headers)
        self._transport_or_none = Transport(
            self._session,
            self._base_url,
            retry=self._retry,
            secret=self._api_key,
            observer=self._observer,
            rng=self._rng,
        )
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

    @property
    def _transport(self) -> Transport:
        if self._transport_or_none is None:
            raise RuntimeError("GeminiClient is used outside `async with`")
        return self._transport_or_none

    async def create_tuned_model(self, request: CreateTunedModelRequest) -> Operation:
        """Start tuning. Raises AlreadyExists when the id is taken; the caller then adopts that model.

        Retrying this POST after a transient error is safe only because callers always pass a deterministic
        tuned_model_id: if the failed attempt did create the model (the service answered 503 after creating
        it), the retry meets 409 ALREADY_EXISTS instead of creating a second model.
        """
        return await self._transport.call(
            "POST",
            "tunedModels.create",
            "/v1beta/tunedModels",
            parse_operation,
            params={"tunedModelId": request.tuned_model_id},
            body=request.to_json(),
        )

    async def get_operation(self, name: str) -> Operation:
        path = f"/v1/{_checked(name, _OPERATION_NAME)}"
        return await self._transport.call("GET", "tunedModels.operations.get", path, parse_operation)

    async def find_operations(self, tuned_model_name: str) -> list[Operation]:
        """All operations of a tuned model, every page."""
        path = f"/v1/{_checked(tuned_model_name, _TUNED_MODEL_NAME)}/operations"
        operations: list[Operation] = []
        token: str | None = None
        seen: set[str] = set()
        while True:
            params = {"pageToken": token} if token else {}
            page, token = await self._transport.call(
                "GET", "tunedModels.operations.list", path, parse_operation_page, params=params
            )
            operations.extend(page)
            if token is None:
                return operations
            _check_progress(token, seen, "tunedModels.operations.list")

    async def get_tuned_model(self, name: str) -> TunedModel:
        path = f"/v1beta/{_checked(name, _TUNED_MODEL_NAME)}"
        return await self._transport.call("GET", "tunedModels.get", path, parse_tuned_model)

    async def cancel_operation(self, name: str) -> None:
        path = f"/v1/{_checked(name, _OPERATION_NAME)}:cancel"
        await self._transport.call("POST", "tunedModels.operations.cancel", path, _parse_cancel, body={})

    async def delete_tuned_model(self, name: str) -> None:
        """Delete the model; NotFound if it does not exist (whether "already gone" is fine is the caller's call)."""
        path = f"/v1beta/{_checked(name, _TUNED_MODEL_NAME)}"
        await self._transport.call("DELETE", "tunedModels.delete", path, _parse_delete)

    async def list_tuned_models(
        self, page_size: int = MAX_PAGE_SIZE, filter: str | None = None
    ) -> AsyncIterator[TunedModel]:
        """Every tuned model (matching `filter`), fetching pages as the iteration reaches them."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, not {page_size}")
        base_params = {"pageSize": str(page_size)}
        if filter:
            base_params["filter"] = filter
        token: str | None = None
        seen: set[str] = set()
        while True:
            params = {**base_params, "pageToken": token} if token else base_params
            page, token = await self._transport.call(
                "GET", "tunedModels.list", "/v1beta/tunedModels", parse_tuned_model_page, params=params
            )
            for model in page:
                yield model
            if token is None:
                return
            _check_progress(token, seen, "tunedModels.list")

    async def generate_text(self, model_name: str, prompt: str) -> str:
        """The model's answer to one text prompt: the first candidate's text ("" if the service gave none)."""
        path = f"/v1beta/{_checked(model_name, _MODEL_NAME)}:generateContent"
        body = {"contents": [{"parts": [{"text": prompt}]}]}
        return await self._transport.call("POST", "tunedModels.generateContent", path, parse_generated_text, body=body)


def _checked(name: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(name):
        raise ValueError(f"not a valid resource name here: {name!r}")
    return name


def _check_progress(token: str, seen: set[str], route: str) -> None:
    """A service that hands out a page token twice would page forever."""
    if token in seen:
        raise MalformedResponse(f"{route}: page token repeated, the listing does not advance")
    seen.add(token)


def _parse_cancel(document: object) -> None:
    read.empty(document, "cancelOperationResponse")


def _parse_delete(document: object) -> None:
    read.empty(document, "deleteTunedModelResponse")
