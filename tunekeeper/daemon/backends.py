"""The configured tuning service: the backend the settings choose, built with its client and credentials."""

from __future__ import annotations

from tunekeeper.backends.gemini.adapter import GeminiBackend
from tunekeeper.backends.gemini.client import GeminiClient
from tunekeeper.backends.googleapi.retry import RetryPolicy
from tunekeeper.backends.port import TuningBackend
from tunekeeper.backends.vertex.adapter import VertexBackend
from tunekeeper.backends.vertex.auth import GoogleTokens
from tunekeeper.backends.vertex.client import VertexClient
from tunekeeper.config import Settings, find_vertex_credentials
from tunekeeper.daemon.metrics import Metrics

# The [vertex] keys read only when the backend is built: a reload that changes them needs a restart.
VERTEX_CONNECTION_KEYS = (
    "project",
    "location",
    "base_url",
    "api_version",
    "storage_url",
    "credentials_file",
    "staging_uri",
    "max_connections",
)


def tuning_backend(settings: Settings, deployment: str, metrics: Metrics | None = None) -> TuningBackend:
    """The configured tuning service, marking its work as `deployment`'s. Use it with `async with`."""
    if settings.backend == "vertex":
        return vertex_backend(settings, deployment, metrics)
    return GeminiBackend(gemini_client(settings, metrics), deployment)


def gemini_client(settings: Settings, metrics: Metrics | None = None) -> GeminiClient:
    gemini = settings.gemini
    return GeminiClient(
        base_url=gemini.base_url,
        api_key=gemini.api_key.get_secret_value(),
        retry=RetryPolicy(
            max_retries=gemini.max_retries, base_delay=gemini.retry_base_delay, max_delay=gemini.retry_max_delay
        ),
        request_timeout=gemini.request_timeout,
        connect_timeout=gemini.connect_timeout,
        max_connections=gemini.max_connections,
        observer=metrics,
    )


def vertex_backend(settings: Settings, deployment: str, metrics: Metrics | None = None) -> VertexBackend:
    vertex = settings.vertex
    credentials = find_vertex_credentials(settings)  # ConfigError, one line, if there is none
    tokens = GoogleTokens(key_file=credentials.path, request_timeout=vertex.request_timeout)
    client = VertexClient(
        project=vertex.project,
        location=vertex.location,
        tokens=tokens,
        base_url=vertex.base_url,
        api_version=vertex.api_version,
        storage_url=vertex.storage_url,
        retry=RetryPolicy(
            max_retries=vertex.max_retries, base_delay=vertex.retry_base_delay, max_delay=vertex.retry_max_delay
        ),
        request_timeout=vertex.request_timeout,
        connect_timeout=vertex.connect_timeout,
        max_connections=vertex.max_connections,
        observer=metrics,
    )
    return VertexBackend(
        client,
        deployment,
        staging_uri=vertex.staging_uri,
        adapter_size=vertex.adapter_size,
        labels=vertex.labels,
        tokens=tokens,
        cancel_wait=vertex.cancel_wait,
    )
