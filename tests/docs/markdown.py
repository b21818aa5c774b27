"""Reading the command blocks users copy out of the project's Markdown, so that tests can run them as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def section(path: Path, heading: str) -> str:
    """The text under `heading` (e.g. "## Using it"), up to the next heading of the same or a higher level.
    A line in a code block is never a heading (a shell comment starts with "# " too)."""
    level = len(heading.split(" ", 1)[0])
    lines = path.read_text().splitlines(keepends=True)
    found: list[str] | None = None
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", line):
            if found is not None and len(line.split(" ", 1)[0]) <= level:
                break
            if line.rstrip("\n") == heading:
                found = []
                continue
        if found is not None:
            found.append(line)
    if found is None:
        raise LookupError(f"{path.name} has no heading {heading!r}")
    return "".join(found)


def shell_blocks(path: Path, heading: str) -> list[str]:
    """The ```sh blocks of a section, continuation lines joined."""
    return [body.replace("\\\n", " ") for language, body in FENCE.findall(section(path, heading)) if language == "sh"]


def commands(block: str) -> list[str]:
    """The block's commands, one per line, without comments or blank lines."""
    found = []
    for line in block.splitlines():
        command = strip_comment(line).strip()
        if command:
            found.append(command)
    return found


def strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a `#` inside quotes is kept)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line
