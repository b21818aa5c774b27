"""Structured logging: one JSON object per line on stdout, or a readable console format on a terminal.

Every record, ours and third-party (aiohttp, SQLAlchemy, APScheduler, Alembic), goes through one structlog
pipeline on top of the standard library's logging, so levels and formats are set in one place. Under systemd
(`JOURNAL_STREAM` set) each JSON line starts with a syslog priority prefix such as `<4>`, so that
`journalctl -p warning` filters by level while `-o cat` still shows pure JSON.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
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


class _Redactor:
    """Replaces known secret values anywhere in an event's string fields."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(s for s in secrets if len(s) >= 4)

    def value(self, value: Any) -> Any:
        """`value` with every known secret replaced, in strings nested in lists and mappings too."""
        if not self.secrets:
            return value
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, Mapping):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
        if not self.secrets:
            return event
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = self._scrub(value)
        return event

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


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


_active = _Redactor(())  # the secrets the last configure_logging was given


def redact(value: Any) -> Any:
    """`value` (text, or JSON-like data) with the known secrets replaced: for what goes to the database
    (`last_error`, event details), which people read as they read the logs."""
    return _active.value(value)


def configure_logging(
    level: str = "info",
    fmt: LogFormat = "auto",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Set up the one pipeline. Safe to call again (SIGHUP reload) with a new level, format or secret."""
    stream = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    journal = not console and bool(os.environ.get("JOURNAL_STREAM"))
    global _active
    _active = _Redactor(secrets)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _rename_message,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        _active,
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
