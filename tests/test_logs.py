"""The logging pipeline: JSON lines, the journald priority prefix, third-party loggers, secrets, levels."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from tunekeeper.logs import REDACTED, add_secrets, configure_logging, get_logger, set_level


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def test_json_lines_carry_timestamp_level_event_and_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    get_logger("tunekeeper.test").info("job_state_changed", job_id=7, from_state="queued", to_state="submitting")
    [line] = lines(out)
    record = json.loads(line)
    assert record["event"] == "job_state_changed"
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")
    assert (record["job_id"], record["from_state"], record["to_state"]) == (7, "queued", "submitting")


def test_under_systemd_each_line_starts_with_its_syslog_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    log = get_logger("tunekeeper.test")
    log.debug("a")
    log.info("b")
    log.warning("c")
    log.error("d")
    prefixes = [line[: line.index(">") + 1] for line in lines(out)]
    assert prefixes == ["<7>", "<6>", "<4>", "<3>"]
    assert all(json.loads(line[3:])["event"] for line in lines(out)), "after the prefix, plain JSON"


def test_third_party_loggers_go_through_the_same_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    logging.getLogger("apscheduler.scheduler").warning("Run time of job %s was missed", "purge")
    logging.getLogger("sqlalchemy.engine.Engine").info("SELECT 1")  # quiet below warning
    [line] = lines(out)
    record = json.loads(line)
    # The sentence is the message; the event is one stable name, so `jq 'select(.event==...)'` groups them.
    assert record["event"] == "library_log"
    assert record["message"] == "Run time of job purge was missed"
    assert (record["level"], record["logger"]) == ("warning", "apscheduler.scheduler")


def test_secrets_are_redacted_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    configure_logging("info", "json", secrets=["AIza-secret-key-123"], stream=out)
    get_logger("tunekeeper.test").warning("api_retry", error="bad key AIza-secret-key-123 refused")
    logging.getLogger("aiohttp.client").warning("url had key=AIza-secret-key-123")
    assert "AIza-secret-key-123" not in out.getvalue()
    assert out.getvalue().count(REDACTED) == 2


def test_a_terminal_gets_readable_text_and_levels_change_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = FakeTerminal()
    configure_logging("warning", "auto", stream=terminal)
    log = get_logger("tunekeeper.test")
    log.info("hidden")
    set_level("info")
    log.info("shown", job_id=3)
    [line] = lines(terminal)
    assert "shown" in line
    assert "job_id" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


@pytest.mark.parametrize(
    "form",
    [
        "p@ss/w:rd é",  # as it is
        "p%40ss%2Fw%3Ard%20%C3%A9",  # URL-encoded
        "p%40ss/w%3ard+%c3%a9",  # percent-encoded in part, lowercase hex, a space as '+'
        "p@ss\\/w:rd \\u00e9",  # JSON-escaped
    ],
)
def test_secrets_are_redacted_in_every_encoded_form_and_in_nested_values(
    monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    configure_logging("info", "json", secrets=["p@ss/w:rd é"], stream=out)
    get_logger("tunekeeper.test").error(
        "config_reload_rejected",
        error=f"url = postgresql://tk:{form}@db/x",
        detail={"nested": [f"again {form}", ("deeper", {"key": form})]},
    )
    record = json.loads(out.getvalue())
    text = json.dumps(record, ensure_ascii=False)
    assert "p@ss" not in text and "p%40ss" not in text.lower() and "ss/w" not in text
    assert record["error"] == f"url = postgresql://tk:{REDACTED}@db/x"
    assert record["detail"]["nested"][0] == f"again {REDACTED}"


def test_secrets_added_later_are_redacted_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    configure_logging("info", "json", secrets=["first-secret"], stream=out)
    add_secrets(["second-secret"])
    get_logger("tunekeeper.test").error("config_reload_rejected", error="first-secret second-secret")
    assert json.loads(out.getvalue())["error"] == f"{REDACTED} {REDACTED}"
