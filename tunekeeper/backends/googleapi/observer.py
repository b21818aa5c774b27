"""A hook for request metrics, passed to the client so that no global state is needed."""

from __future__ import annotations

from typing import Protocol


class RequestObserver(Protocol):
    """`route` is a template name such as "tunedModels.create"; `status` is the HTTP status as a string, or
    "connection_error", "timeout" or "malformed" when no usable response arrived."""

    def request_finished(self, route: str, status: str, seconds: float) -> None:
        """One HTTP attempt ended (retried attempts are reported each)."""

    def retry_scheduled(self, route: str, status: str, delay: float) -> None:
        """A failed attempt will be retried after `delay` seconds."""
