"""What the store writes for people to read (`last_error`, event details) passes the log's redactor: a known
secret quoted by an error, whoever wrote it, never reaches the database."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator

import pytest

from tunekeeper.db.engine import make_engine
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.logs import REDACTED, configure_logging

SECRET = "AIza-redact-me-0123456789"


@pytest.fixture
def secret_known() -> Iterator[None]:
    configure_logging("warning", "json", secrets=[SECRET], stream=io.StringIO())
    yield
    configure_logging("warning", "json", stream=io.StringIO())


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    engine = make_engine(database_url)
    yield JobStore(engine)
    await engine.dispose()


@pytest.mark.usefixtures("secret_known")
async def test_errors_and_event_details_are_redacted_on_their_way_in(store: JobStore) -> None:
    job_id = await store.add_job(NewJob(display_name="quoting", training_data=[{"text_input": "1", "output": "2"}]))
    [job] = await store.claim_for_submission("owner-a", limit=1, max_active=10, lease_seconds=30)
    assert job.id == job_id
    assert await store.mark_invalid(job, error=f"rejected: the header was {SECRET}")
    await store.record_event(job_id, "evaluated", {"error": f"x {SECRET}", "nested": [{"text": SECRET}], "n": 3})

    found = await store.get_job(job_id)
    assert found is not None and found.last_error == f"rejected: the header was {REDACTED}"
    events = {event.kind: event.detail for event in await store.events(job_id)}
    assert events["rejected"]["error"] == f"rejected: the header was {REDACTED}"
    assert events["evaluated"] == {"error": f"x {REDACTED}", "nested": [{"text": REDACTED}], "n": 3}
