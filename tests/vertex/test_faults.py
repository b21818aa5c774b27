"""Transient failures the emulator injects are retried (RetryInfo honoured); the call then succeeds, and a
create is not repeated by a retry of a failure that came before it took effect."""

from __future__ import annotations

import pytest

from tests.vertex.conftest import BUCKET, RecordingObserver
from tests.vertex.test_tuning_jobs import spec
from tunekeeper.backends.googleapi.errors import TransientError
from tunekeeper.backends.vertex.client import VertexClient
from tunekeeper.emulator import Emulator

MISSING = f"gs://{BUCKET}/missing.jsonl"


@pytest.mark.parametrize(("fault", "seen_as"), [("429", "429"), ("503", "503"), ("500", "500")])
async def test_injected_errors_are_retried_until_the_call_succeeds(
    client: VertexClient,
    training_data: str,
    emulator: Emulator,
    observer: RecordingObserver,
    fault: str,
    seen_as: str,
) -> None:
    created = await client.create_tuning_job(spec(training_data))
    emulator.set_faults({fault: 0.5})

    for _ in range(8):
        assert (await client.get_tuning_job(created.name)).name == created.name
        assert await client.storage.stat(MISSING) is None

    assert emulator.stats()["faults_injected"][fault] >= 1
    retried = [(route, delay) for route, status, delay in observer.retries if status == seen_as]
    assert {route for route, _ in retried} <= {"tuningJobs.get", "storage.objects.get"}
    assert len(retried) == emulator.stats()["faults_injected"][fault]
    if fault == "429":
        # Vertex AI's 429 carries RetryInfo (0.05 s): no retry comes sooner, although our own back-off is
        # shorter. Cloud Storage's error shape has no details, and its Retry-After rounds 0.05 s to 0.
        vertex_delays = [delay for route, delay in retried if route == "tuningJobs.get"]
        assert vertex_delays
        assert min(vertex_delays) >= 0.05


@pytest.mark.parametrize("fault", ["drop", "drop-after", "503-after"])
async def test_a_create_is_never_repeated_blindly(
    client: VertexClient, training_data: str, emulator: Emulator, fault: str
) -> None:
    # The service picks the job's id, so a create repeated after a lost answer would make a second job: the
    # failure goes up instead, and the caller looks for its labels before it creates again.
    emulator.set_faults({fault: 1.0})

    with pytest.raises(TransientError):
        await client.create_tuning_job(spec(training_data, labels={"tunekeeper-job": "7"}))

    counts = emulator.stats()["tuning_creates"]["by_label"]["tunekeeper-job=7"]
    assert counts == {"attempted": 1, "accepted": 0 if fault == "drop" else 1}
