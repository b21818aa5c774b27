"""Vertex AI tuning jobs and the Cloud Storage they read, over REST: `VertexClient` (with `client.storage`),
OAuth tokens from a key file or Application Default Credentials (`GoogleTokens`), typed values and errors.

Nothing here knows the daemon, the store or the configuration; the backend port's adapter maps onto it.
"""

from tunekeeper.backends.vertex.auth import CLOUD_PLATFORM_SCOPE, GoogleTokens, TokenSource
from tunekeeper.backends.vertex.client import OperationFailed, VertexClient
from tunekeeper.backends.vertex.storage import CloudStorage
from tunekeeper.backends.vertex.types import (
    AdapterSize,
    Endpoint,
    JobState,
    ObjectInfo,
    Operation,
    TuningJob,
    TuningJobSpec,
    TuningSubState,
)

__all__ = [
    "CLOUD_PLATFORM_SCOPE",
    "AdapterSize",
    "CloudStorage",
    "Endpoint",
    "GoogleTokens",
    "JobState",
    "ObjectInfo",
    "Operation",
    "OperationFailed",
    "TokenSource",
    "TuningJob",
    "TuningJobSpec",
    "TuningSubState",
    "VertexClient",
]
