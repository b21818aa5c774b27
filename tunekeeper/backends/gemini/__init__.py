"""The Gemini API: its vocabulary, limits, an aiohttp client, and the adapter that makes it a TuningBackend."""

from tunekeeper.backends.gemini.client import GeminiClient
from tunekeeper.backends.gemini.types import (
    MAX_DISPLAY_NAME_CHARS,
    MAX_INPUT_CHARS,
    MAX_OUTPUT_CHARS,
    TUNED_MODEL_ID_PATTERN,
    CreateTunedModelRequest,
    Hyperparameters,
    ModelState,
    Operation,
    OperationError,
    OperationProgress,
    Snapshot,
    TrainingExample,
    TunedModel,
)
from tunekeeper.backends.googleapi.errors import (
    AlreadyExists,
    ConnectionFailed,
    InvalidArgument,
    MalformedResponse,
    NotFound,
    PermanentError,
    PermissionDenied,
    RequestTimeout,
    ServiceError,
    TransientError,
)
from tunekeeper.backends.googleapi.observer import RequestObserver
from tunekeeper.backends.googleapi.retry import RetryPolicy, backoff_delay

__all__ = [
    "MAX_DISPLAY_NAME_CHARS",
    "MAX_INPUT_CHARS",
    "MAX_OUTPUT_CHARS",
    "TUNED_MODEL_ID_PATTERN",
    "AlreadyExists",
    "ConnectionFailed",
    "CreateTunedModelRequest",
    "GeminiClient",
    "Hyperparameters",
    "InvalidArgument",
    "MalformedResponse",
    "ModelState",
    "NotFound",
    "Operation",
    "OperationError",
    "OperationProgress",
    "PermanentError",
    "PermissionDenied",
    "RequestObserver",
    "RequestTimeout",
    "RetryPolicy",
    "ServiceError",
    "Snapshot",
    "TrainingExample",
    "TransientError",
    "TunedModel",
    "backoff_delay",
]
