"""Reading the command blocks users copy out of the project's Markdown, so that tests can run them as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def section(path: Path, heading: str) -> str:
    """The text under `heading` (e.g. "## Using it"), up to the next heading of the same or a higher level."""
    text = path.read_text()
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    ends = [match.start() for match in re.finditer(r"^(#+) ", text[start:], flags=re.MULTILINE)]
    ends = [end for end in ends if len(text[start + end :].split(" ", 1)[0]) <= len(level)]
    return text[start : start + ends[0]] if ends else text[start:]


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
