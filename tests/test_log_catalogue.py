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


RECIPE_EVENT = re.compile(r"\.event\s*==\s*\\?\"([a-z0-9_]+)\\?\"")
RECIPE_FIELD = re.compile(r"(?<![\w)])\.([a-z][a-z0-9_]*)")  # .to_state, \(.route)
RECIPE_OBJECT = re.compile(r"\{\s*([a-z_]+(?:\s*,\s*[a-z_]+)*)\s*\}")  # {job_id, error}
ALWAYS_PRESENT = {"timestamp", "level", "event"}


def readme_recipes() -> list[str]:
    """The jq filters users copy: from the README's shell blocks and from the alert rules' descriptions."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, flags=re.DOTALL)
    rules = (ROOT / "monitoring" / "tunekeeper.rules.yml").read_text()
    return [line.split("jq", 1)[1] for text in [*blocks, rules] for line in text.splitlines() if " jq " in line]


def catalogue_fields() -> dict[str, str]:
    """event name -> its catalogue row's fields cell."""
    catalogue = {}
    for row in (ROOT / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in row.split("|")]
        if len(cells) > 4 and cells[1].startswith("`"):
            for name in re.findall(r"`([a-z0-9_]+)`", cells[1]):
                catalogue[name] = cells[3]
    return catalogue


def test_the_recipes_name_only_events_the_daemon_emits() -> None:
    named = {name for recipe in readme_recipes() for name in RECIPE_EVENT.findall(recipe)}
    assert {"job_state_changed", "api_retry"} <= named, "the recipe scan found too little"
    stale = sorted(named - emitted_events().keys())
    assert not stale, f"log recipes name events the daemon no longer emits: {stale}"


def test_the_recipes_read_fields_their_events_carry() -> None:
    """A field a recipe reads (`.to_state`, `{job_id, error}`) is listed for the event it selects."""
    catalogue = catalogue_fields()
    checked = 0
    for recipe in readme_recipes():
        for event in RECIPE_EVENT.findall(recipe):
            fields = set(RECIPE_FIELD.findall(recipe))
            fields |= {f.strip() for group in RECIPE_OBJECT.findall(recipe) for f in group.split(",")}
            listed = set(re.findall(r"[a-z_]+", catalogue.get(event, "")))
            unknown = sorted(fields - listed - ALWAYS_PRESENT)
            assert not unknown, f"a recipe reads {unknown} from {event}, which the catalogue does not list for it"
            checked += 1
    assert checked >= 2
