"""Counters behind `GET /emulator/stats`. Recording is one or two dict increments per request; the views by
method, route and status are aggregated only when stats are read."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any


class RequestStats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()  # (method, route, status) -> count
        self.faults: Counter[str] = Counter()
        self.creates_attempted = 0
        self.creates_accepted = 0
        self.attempted_by_model: Counter[str] = Counter()
        self.accepted_by_model: Counter[str] = Counter()
        self.operation_gets: Counter[str] = Counter()  # model id -> operation GETs received
        # Vertex AI tuning jobs: creates overall and per "KEY=VALUE" label, and GETs per job name.
        self.tuning_attempted = 0
        self.tuning_accepted = 0
        self.tuning_attempted_by_label: Counter[str] = Counter()
        self.tuning_accepted_by_label: Counter[str] = Counter()
        self.tuning_job_gets: Counter[str] = Counter()

    def record(self, method: str, route: str, status: str) -> None:
        """`status` is the HTTP code as text, or "drop" for a closed connection."""
        self.requests[(method, route, status)] += 1

    def create_attempted(self, model_id: str | None) -> None:
        self.creates_attempted += 1
        if model_id:
            self.attempted_by_model[model_id] += 1

    def create_accepted(self, model_id: str, named: bool) -> None:
        """`named`: the id came with the request (then the attempt was counted under it already)."""
        self.creates_accepted += 1
        self.accepted_by_model[model_id] += 1
        if not named:
            self.attempted_by_model[model_id] += 1

    def tuning_create_attempted(self, labels: Iterable[str]) -> None:
        self.tuning_attempted += 1
        self.tuning_attempted_by_label.update(labels)

    def tuning_create_accepted(self, labels: Iterable[str]) -> None:
        self.tuning_accepted += 1
        self.tuning_accepted_by_label.update(labels)

    def snapshot(self) -> dict[str, Any]:
        by_method: Counter[str] = Counter()
        by_route: Counter[str] = Counter()
        by_status: Counter[str] = Counter()
        by_route_status: dict[str, Counter[str]] = {}
        for (method, route, status), count in self.requests.items():
            by_method[method] += count
            by_route[route] += count
            by_status[status] += count
            by_route_status.setdefault(route, Counter())[status] += count
        model_ids = sorted(set(self.attempted_by_model) | set(self.accepted_by_model))
        return {
            "requests": {
                "total": sum(by_method.values()),
                "by_method": dict(by_method),
                "by_route": dict(by_route),
                "by_status": dict(by_status),
                "by_route_status": {route: dict(counts) for route, counts in by_route_status.items()},
            },
            "faults_injected": dict(self.faults),
            "creates": {
                "attempted": self.creates_attempted,
                "accepted": self.creates_accepted,
                "by_model": {
                    model_id: {
                        "attempted": self.attempted_by_model[model_id],
                        "accepted": self.accepted_by_model[model_id],
                    }
                    for model_id in model_ids
                },
            },
            "tuning_creates": {
                "attempted": self.tuning_attempted,
                "accepted": self.tuning_accepted,
                "by_label": {
                    label: {
                        "attempted": self.tuning_attempted_by_label[label],
                        "accepted": self.tuning_accepted_by_label[label],
                    }
                    for label in sorted(set(self.tuning_attempted_by_label) | set(self.tuning_accepted_by_label))
                },
            },
        }
