"""Vertex AI's long-running operations for undeploy and delete: done when answered, kept so they can be read again.

The emulator carries out an undeploy or a delete at once, so every operation it hands out is already done. It
keeps them (by full name) for `operations.get`, as clients poll an operation even when its first answer says
`done: true`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tunekeeper.emulator.errors import ApiError

UNDEPLOY = "undeploy"
DELETE = "delete"


@dataclass(frozen=True, slots=True)
class DoneOperation:
    name: str  # projects/P/locations/L/[endpoints/E/]operations/ID
    kind: str  # UNDEPLOY or DELETE: which metadata and response types it renders with
    created_at: float


class Operations:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self._operations: dict[str, DoneOperation] = {}
        self._ids = random.Random(f"{self.seed}:vertex-operations")

    def record(self, parent: str, kind: str, now: float) -> DoneOperation:
        """A done operation under `parent` (a location, or the endpoint for an undeploy)."""
        # Vertex's operation ids are 19-digit numbers, like its resource ids.
        operation = DoneOperation(f"{parent}/operations/{self._ids.randrange(10**18, 10**19)}", kind, now)
        self._operations[operation.name] = operation
        return operation

    def get(self, name: str) -> DoneOperation:
        operation = self._operations.get(name)
        if operation is None:
            raise ApiError("NOT_FOUND", f"Operation `{name}` not found.")
        return operation

    def __len__(self) -> int:
        return len(self._operations)
