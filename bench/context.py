"""What every scenario gets: the options, a scratch directory, the results so far and a place for notes."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import Results


@dataclass
class Context:
    quick: bool
    time_scale: float
    seed: int
    postgres_url: str | None  # admin url of a PostgreSQL server, None when there is none
    postgres_note: str
    workdir: Path
    results: Results
    vertex_time_scale: float = 60.0  # the vertex scenario's K (its jobs run for hours)
    shared: dict[str, list[float]] = field(default_factory=dict)  # figures one scenario leaves for another

    def share(self, key: str, value: float) -> None:
        self.shared.setdefault(key, []).append(value)

    def shared_median(self, key: str) -> float | None:
        """The median of the values shared under `key` so far (one per run), or None."""
        values = self.shared.get(key)
        return statistics.median(values) if values else None

    def note(self, scenario: str, text: str) -> None:
        self.results.note(scenario, text)

    def directory(self, name: str) -> Path:
        """A new, empty scratch directory for one run (`name`, then `name-2`, ... when repeated)."""
        path, number = self.workdir / name, 1
        while path.exists():
            number += 1
            path = self.workdir / f"{name}-{number}"
        path.mkdir(parents=True)
        return path
