"""Figures, the table they print as, and the JSON they are saved as (bench/results/<timestamp>.json, latest.json)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    """One measured value; with a goal, `limit` and `compare` ("<=" or ">="). `runs`: every run's value when the
    figure is the median of several (--repeat)."""

    scenario: str
    name: str
    value: float | None
    unit: str = ""
    limit: float | None = None
    compare: str = ""
    runs: list[float] = field(default_factory=list)

    @property
    def goal(self) -> str | None:
        return None if self.limit is None else f"{self.compare} {self.limit:g} {self.unit}".strip()

    @property
    def met(self) -> bool | None:
        if self.limit is None:
            return None
        if self.value is None or math.isnan(self.value):
            return False
        return self.value <= self.limit if self.compare == "<=" else self.value >= self.limit

    def shown(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "n/a"
        text = f"{_number(self.value)} {self.unit}".strip()
        if len(self.runs) > 1:
            text += f" ({_number(min(self.runs))}-{_number(max(self.runs))})"
        return text

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "goal": self.goal, "met": self.met}


def _number(value: float) -> str:
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.01:
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return f"{value:.2g}"


def at_most(scenario: str, name: str, value: float, limit: float, unit: str) -> Figure:
    return Figure(scenario, name, value, unit, limit, "<=")


def at_least(scenario: str, name: str, value: float, limit: float, unit: str) -> Figure:
    return Figure(scenario, name, value, unit, limit, ">=")


def medians(runs: list[list[Figure]]) -> list[Figure]:
    """One figure per (scenario, name), in the first run's order: the median of the runs' values."""
    values: dict[tuple[str, str], list[float]] = {}
    for figures in runs:
        for f in figures:
            if f.value is not None and not math.isnan(f.value):
                values.setdefault((f.scenario, f.name), []).append(f.value)
    combined = []
    for f in runs[0]:
        found = values.get((f.scenario, f.name), [])
        median = statistics.median(found) if found else None
        combined.append(Figure(f.scenario, f.name, median, f.unit, f.limit, f.compare, found))
    return combined


@dataclass
class Results:
    started: datetime
    command: str
    figures: list[Figure] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def note(self, scenario: str, text: str) -> None:
        self.notes.setdefault(scenario, []).append(text)


def table(results: Results) -> str:
    rows = [("scenario", "figure", "value", "goal", "met?")]
    for f in results.figures:
        met = "" if f.met is None else ("yes" if f.met else "NO")
        rows.append((f.scenario, f.name, f.shown(), f.goal or "", met))
    for scenario, error in results.errors.items():
        rows.append((scenario, "(failed)", error[:60], "", "NO"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) if i != 2 else row[i].rjust(widths[i]) for i in range(5)]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    for scenario, notes in results.notes.items():
        for text in notes:
            lines.append(f"note [{scenario}]: {text}")
    return "\n".join(lines)


def markdown_table(results: Results) -> str:
    lines = ["| scenario | figure | value | goal | met? |", "|---|---|---:|---|---|"]
    for f in results.figures:
        met = "" if f.met is None else ("yes" if f.met else "**no**")
        lines.append(f"| {f.scenario} | {f.name} | {f.shown()} | {f.goal or ''} | {met} |")
    for scenario, error in results.errors.items():
        lines.append(f"| {scenario} | (failed) | {error} | | **no** |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """nproc, memory, CPU model, Python, load: where the figures were taken."""
    cpu = memory = ""
    with contextlib.suppress(OSError):
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = match.group(1).strip() if match else ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        memory = subprocess.run(["free", "-h"], capture_output=True, text=True, timeout=5).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "free_h": memory,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the package had uncommitted changes (read-only git commands)."""
    root = RESULTS_DIR.parent.parent

    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
            if done.returncode == 0:
                return done.stdout.strip()
        return ""

    changed = git("status", "--porcelain", "--", "tunekeeper")
    return {"commit": git("rev-parse", "--short", "HEAD"), "tunekeeper_changed": bool(changed)}


def save(results: Results, extra: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    document = {
        "started": results.started.isoformat(),
        "command": results.command,
        **extra,
        "figures": [f.as_json() for f in results.figures],
        "notes": results.notes,
        "errors": results.errors,
        "scenario_seconds": results.seconds,
    }
    text = json.dumps(document, indent=2, default=str) + "\n"
    stamp = results.started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_text(text)
    (RESULTS_DIR / "latest.json").write_text(text)
    return path


def load(path: Path) -> tuple[Results, dict[str, Any]]:
    document = json.loads(path.read_text())
    results = Results(
        started=datetime.fromisoformat(document["started"]),
        command=document["command"],
        figures=[
            Figure(f["scenario"], f["name"], f["value"], f["unit"], f.get("limit"), f.get("compare", ""), f["runs"])
            for f in document["figures"]
        ],
        notes=document.get("notes", {}),
        errors=document.get("errors", {}),
        seconds=document.get("scenario_seconds", {}),
    )
    return results, document


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.report [FILE]`: a saved run (default latest.json) as a Markdown table, for the README."""
    args = sys.argv[1:] if argv is None else argv
    results, document = load(Path(args[0]) if args else RESULTS_DIR / "latest.json")
    code = document.get("code", {})
    state = " + uncommitted changes in tunekeeper/" if code.get("tunekeeper_changed") else ""
    print(f"`{results.command}` ({results.started:%Y-%m-%d %H:%M} UTC, commit {code.get('commit', '?')}{state})\n")
    print(markdown_table(results))
    print()
    for scenario, notes in results.notes.items():
        for text in notes:
            print(f"- {scenario}: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
