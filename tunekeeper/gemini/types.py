"""The tuning service's vocabulary, as plain immutable values, shared by the client and dataset validation."""

from __future__ import annotations

from dataclasses import dataclass

# Published limits of the tuning service (API-FACTS.md, "Dataset and model limits").
MAX_INPUT_CHARS = 40_000
MAX_OUTPUT_CHARS = 5_000
MAX_DISPLAY_NAME_CHARS = 40
TUNED_MODEL_ID_PATTERN = r"[a-z]([a-z0-9-]{0,38}[a-z0-9])?"


@dataclass(frozen=True, slots=True)
class TrainingExample:
    text_input: str
    output: str
