"""Every log event the daemon emits has a stable snake_case name and is listed in the README's catalogue."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
LOG_CALL = re.compile(
    r"\b(?:log|logger|self\.log|get_logger\([^)]*\))\.(?:debug|info|warning|error|exception|critical)\(\s*\"([^\"]+)\""
)
SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


def emitted_events() -> dict[str, str]:
    """event name -> the file that emits it (the emulator, a separate program, has its own README)."""
    found = {}
    for path in (ROOT / "tunekeeper").rglob("*.py"):
        if "emulator" in path.parts:
            continue
        for name in LOG_CALL.findall(path.read_text()):
            found[name] = str(path.relative_to(ROOT))
    return found


def test_the_scan_finds_the_events_it_should() -> None:
    events = emitted_events()
    assert {"job_state_changed", "api_retry", "daemon_started", "lease_renewal_failed"} <= events.keys()


def test_event_names_are_snake_case() -> None:
    bad = {name: where for name, where in emitted_events().items() if not SNAKE_CASE.fullmatch(name)}
    assert not bad, f"log events must have snake_case names: {bad}"


def test_every_event_is_in_the_readme_catalogue() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = {name: where for name, where in emitted_events().items() if f"`{name}`" not in readme}
    assert not missing, f"add these events to the README's catalogue: {missing}"
