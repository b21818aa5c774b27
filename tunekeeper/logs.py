"""Structured logging: one JSON object per line on stdout, or a readable console format on a terminal.

Every record, ours and third-party (aiohttp, SQLAlchemy, APScheduler, Alembic), goes through one structlog
pipeline on top of the standard library's logging, so levels and formats are set in one place. Under systemd
(`JOURNAL_STREAM` set) each JSON line starts with a syslog priority prefix such as `<4>`, so that
`journalctl -p warning` filters by level while `-o cat` still shows pure JSON.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "console", "auto"]

_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
_QUIET_LIBRARIES = {
    "aiohttp.access": logging.WARNING,
    "sqlalchemy.engine": logging.WARNING,
    "alembic": logging.WARNING,  # it narrates every schema check
    "apscheduler": logging.WARNING,  # and this every scheduled run
}
REDACTED = "[redacted]"


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _char_forms(char: str) -> str:
    """A pattern for one character of a secret in any of the forms text carries it in: as it is,
    percent-encoded (either case of hex, `+` for a space: URLs, query strings, userinfo), or escaped the way JSON
    and Python write it (`\\u00e9`, `\\x2f`, `\\"`)."""
    forms = [re.escape(char)]
    forms.append("(?i:" + "".join(f"%{byte:02x}" for byte in char.encode()) + ")")
    if char == " ":
        forms.append(r"\+")
    if char in _JSON_ESCAPES:
        forms.append(re.escape(_JSON_ESCAPES[char]))
    code = ord(char)
    if code <= 0xFFFF:
        forms.append(f"(?i:\\\\u{code:04x})")
    else:  # JSON writes a character beyond the BMP as a surrogate pair
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        forms.append(f"(?i:\\\\u{high:04x}\\\\u{low:04x})")
        forms.append(f"\\\\U{code:08x}")
    if code <= 0xFF:
        forms.append(f"(?i:\\\\x{code:02x})")
    return "(?:" + "|".join(forms) + ")"


def secret_pattern(secret: str) -> re.Pattern[str]:
    """Matches `secret` in every encoded form, and any mixture of them (a URL encodes some characters only)."""
    return re.compile("".join(_char_forms(char) for char in secret))


class _Redactor:
    """Replaces known secret values, in every encoded form, anywhere in an event: strings, and strings nested
    in dicts, lists and tuples, and whatever other value renders as text that holds one."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.patterns: dict[str, re.Pattern[str]] = {}
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if len(secret) >= 4 and secret not in self.patterns:
                self.patterns[secret] = secret_pattern(secret)

    def value(self, value: Any) -> Any:
        """`value` with every known secret replaced, in strings nested in lists and mappings too."""
        return self._value(value) if self.patterns else value

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
        if not self.patterns:
            return event
        for key, value in event.items():
            event[key] = self._value(value)
        return event

    def _value(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self._scrub(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth < 20:
            if isinstance(value, dict):
                return {self._value(k, depth + 1): self._value(v, depth + 1) for k, v in value.items()}
            if isinstance(value, list | tuple | set | frozenset):
                return [self._value(item, depth + 1) for item in value]
        text = str(value)
        scrubbed = self._scrub(text)
        return scrubbed if scrubbed != text else value

    def _scrub(self, text: str) -> str:
        for pattern in self.patterns.values():
            text = pattern.sub(REDACTED, text)
        return text


_redactor = _Redactor(())  # the secrets the pipeline knows: configure_logging's, and those added since


def add_secrets(secrets: Iterable[str]) -> None:
    """Teach the running pipeline more secrets (a reloaded file's, before anything about it is logged)."""
    _redactor.add(secrets)


def _json_renderer(journal: bool) -> Processor:
    render = structlog.processors.JSONRenderer(sort_keys=False)

    def json_line(logger: WrappedLogger, name: str, event: EventDict) -> str:
        level = str(event.get("level", "info"))
        line = render(logger, name, event)
        assert isinstance(line, str)
        return f"<{_PRIORITY.get(level, 6)}>{line}" if journal else line

    return json_line


LIBRARY_EVENT = "library_log"


def _rename_message(logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
    # A library's record arrives with its sentence in `event`. `event` is our stable snake_case name (what jq
    # groups by), so the sentence moves to `message` under one name for all of them, tagged with its logger.
    record = event.get("_record")
    if record is not None and record.name and not record.name.startswith("tunekeeper"):
        event.setdefault("logger", record.name)
        event["message"] = event.get("event")
        event["event"] = LIBRARY_EVENT
    return event


def first_line(error: BaseException) -> str:
    """An error's gist for a log line or a message: SQLAlchemy and others append detail (the statement) on
    further lines; an error without text is named by its type."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def redact(value: Any) -> Any:
    """`value` (text, or JSON-like data) with the known secrets replaced: for what goes to the database
    (`last_error`, event details), which people read as they read the logs."""
    return _redactor.value(value)


def configure_logging(
    level: str = "info",
    fmt: LogFormat = "auto",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Set up the one pipeline. Safe to call again (SIGHUP reload) with a new level, format or secret."""
    stream = stream or sys.stdout
    global _redactor
    _redactor = _Redactor(secrets)
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    journal = not console and bool(os.environ.get("JOURNAL_STREAM"))

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _rename_message,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        _redactor,
    ]
    renderer: Processor = structlog.dev.ConsoleRenderer(colors=stream.isatty()) if console else _json_renderer(journal)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)

    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
    for name, floor in _QUIET_LIBRARIES.items():
        logging.getLogger(name).setLevel(max(floor, logging.getLogger().level))


def get_logger(name: str | None = None, **context: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger.bind(**context) if context else logger
