"""What the daemon needs from a tuning service: the Gemini API client is one implementation, Vertex AI may be next."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from tunekeeper.backends.gemini.types import CreateTunedModelRequest, Operation, TunedModel


class TuningBackend(Protocol):
    """Errors are those of `tunekeeper.backends.googleapi.errors`: TransientError (retry later) or PermanentError."""

    async def create_tuned_model(self, request: CreateTunedModelRequest) -> Operation:
        """Start tuning; AlreadyExists if the id is taken (the caller adopts that model)."""
        ...

    async def get_operation(self, name: str) -> Operation: ...

    async def find_operations(self, tuned_model_name: str) -> list[Operation]:
        """All operations of a tuned model: how a caller adopts a model after AlreadyExists."""
        ...

    async def get_tuned_model(self, name: str) -> TunedModel: ...

    async def cancel_operation(self, name: str) -> None: ...

    async def delete_tuned_model(self, name: str) -> None:
        """NotFound if there is no such model."""
        ...

    def list_tuned_models(self, page_size: int = 1000, filter: str | None = None) -> AsyncIterator[TunedModel]:
        """Every tuned model (matching `filter`), fetched page by page."""
        ...

    async def generate_text(self, model_name: str, prompt: str) -> str: ...
