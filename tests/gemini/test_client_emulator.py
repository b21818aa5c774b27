"""The client against the emulator over loopback HTTP: the whole life of a tuned model, paging, retries under
injected faults, server retry hints, permanent errors, and the create that lands but loses its answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.gemini.conftest import API_KEY
from tests.waiting import wait_until
from tunekeeper.backends.gemini import (
    AlreadyExists,
    CreateTunedModelRequest,
    GeminiClient,
    InvalidArgument,
    ModelState,
    NotFound,
    Operation,
    PermissionDenied,
    RetryPolicy,
    TrainingExample,
    TransientError,
)
from tunekeeper.emulator import Emulator

EXAMPLES = [TrainingExample(str(n), str(n + 1)) for n in range(1, 5)]
BASE_MODEL = "models/gemini-1.5-flash-001-tuning"
# Enough retries that 30% faults practically never exhaust them (0.3**11 is about 2e-6 per call).
PATIENT = RetryPolicy(max_retries=10, base_delay=0.005, max_delay=0.05)

LogList = list[MutableMapping[str, Any]]


class RecordingObserver:
    def __init__(self) -> None:
        self.retries: list[tuple[str, str, float]] = []

    def request_finished(self, route: str, status: str, seconds: float) -> None:
        pass

    def retry_scheduled(self, route: str, status: str, delay: float) -> None:
        self.retries.append((route, status, delay))


def create_request(model_id: str, display_name: str = "number generator") -> CreateTunedModelRequest:
    return CreateTunedModelRequest(model_id, display_name, BASE_MODEL, EXAMPLES, epoch_count=2, batch_size=2)


@pytest.fixture
def logs() -> Iterator[LogList]:
    """Every structlog event of the test; none of them may mention the API key."""
    with capture_logs() as captured:
        yield captured
    assert API_KEY not in repr(captured)


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[GeminiClient]:
    async with GeminiClient(
        base_url=emulator.base_url,
        api_key=API_KEY,
        retry=PATIENT,
        request_timeout=10.0,
        connect_timeout=2.0,
        max_connections=8,
    ) as gemini:
        yield gemini


async def finished(client: GeminiClient, operation_name: str) -> Operation:
    async def poll() -> Operation | None:
        operation = await client.get_operation(operation_name)
        return operation if operation.done else None

    return await wait_until(poll, within=10.0, message=f"{operation_name} to finish")


def retries(logs: LogList) -> LogList:
    return [entry for entry in logs if entry["event"] == "api_retry"]


def route_counts(emulator: Emulator, route: str) -> dict[str, int]:
    counts: dict[str, int] = emulator.stats()["requests"]["by_route_status"].get(route, {})
    return counts


async def test_life_of_a_tuned_model(emulator: Emulator, client: GeminiClient, logs: LogList) -> None:
    created = await client.create_tuned_model(create_request("number-generator-1"))
    assert created.tuned_model_name == "tunedModels/number-generator-1"
    assert created.progress.total_steps == 4  # ceil(4 examples * 2 epochs / batch 2)

    done = await finished(client, created.name)
    assert done.error is None
    assert done.model is not None
    assert done.model.state is ModelState.ACTIVE
    assert done.progress.completed_steps == done.progress.total_steps

    model = await client.get_tuned_model(created.tuned_model_name)
    assert model.display_name == "number generator"
    assert model.base_model == BASE_MODEL
    assert model.create_time is not None
    assert model.create_time.tzinfo is not None
    assert model.hyperparameters.epoch_count == 2
    assert model.snapshots

    assert await client.generate_text(model.name, "3") == "4"
    assert [m.name async for m in client.list_tuned_models()] == [model.name]

    await client.delete_tuned_model(model.name)
    with pytest.raises(NotFound) as gone:
        await client.get_tuned_model(model.name)
    assert str(gone.value).startswith("NOT_FOUND (404): ")
    with pytest.raises(NotFound):
        await client.delete_tuned_model(model.name)
    assert retries(logs) == []


async def test_cancel(emulator: Emulator, client: GeminiClient, logs: LogList) -> None:
    emulator.configure(step_seconds=60.0)
    created = await client.create_tuned_model(create_request("slow-1"))
    await client.cancel_operation(created.name)
    operation = await client.get_operation(created.name)
    assert operation.done
    assert operation.error is not None
    assert operation.error.code == 1


async def test_listing_follows_every_page(emulator: Emulator, client: GeminiClient, logs: LogList) -> None:
    ids = [f"paged-{n:02d}" for n in range(25)]
    await asyncio.gather(*(client.create_tuned_model(create_request(model_id)) for model_id in ids))
    names = [model.name async for model in client.list_tuned_models(page_size=4)]
    assert sorted(names) == [f"tunedModels/{model_id}" for model_id in ids]
    assert route_counts(emulator, "tunedModels.list") == {"200": 7}


async def test_injected_faults_are_retried_away(emulator: Emulator, client: GeminiClient, logs: LogList) -> None:
    emulator.set_faults({"429": 0.15, "503": 0.15})
    ids = [f"faulty-{n:02d}" for n in range(20)]  # about 130 requests: every fault kind shows up
    operations = await asyncio.gather(*(client.create_tuned_model(create_request(model_id)) for model_id in ids))
    for operation in operations:
        done = await finished(client, operation.name)
        assert done.model is not None
        assert done.model.state is ModelState.ACTIVE
    models = [model async for model in client.list_tuned_models(page_size=3)]
    assert sorted(model.name for model in models) == [f"tunedModels/{model_id}" for model_id in ids]
    for model in models:
        assert (await client.get_tuned_model(model.name)).state is ModelState.ACTIVE
        assert await client.generate_text(model.name, "1") == "2"

    stats = emulator.stats()
    assert stats["faults_injected"].keys() == {"429", "503"}
    assert stats["creates"]["accepted"] == len(ids)
    logged = retries(logs)
    assert {entry["status"] for entry in logged} == {"429", "503"}
    assert len(logged) == sum(stats["faults_injected"].values())
    for entry in logged:
        assert entry["log_level"] == "warning"
        assert entry["route"].startswith("tunedModels.")
        assert "://" not in repr(entry)  # no URL in a log line


async def test_a_dropped_connection_is_retried(emulator: Emulator, logs: LogList) -> None:
    emulator.set_faults({"drop": 1.0})
    observer = RecordingObserver()
    policy = RetryPolicy(max_retries=5, base_delay=0.2, max_delay=0.2)
    async with GeminiClient(base_url=emulator.base_url, api_key=API_KEY, retry=policy, observer=observer) as client:
        creating = asyncio.create_task(client.create_tuned_model(create_request("dropped-1")))
        await wait_until(lambda: emulator.stats()["faults_injected"].get("drop"), message="the first drop")
        emulator.set_faults({}, replace=True)
        operation = await asyncio.wait_for(creating, timeout=10.0)
    assert operation.tuned_model_name == "tunedModels/dropped-1"
    drops = route_counts(emulator, "tunedModels.create")["drop"]
    assert drops >= 1
    assert [status for _, status, _ in observer.retries] == ["connection_error"] * drops
    assert [entry["status"] for entry in retries(logs)] == ["connection_error"] * drops
    assert route_counts(emulator, "tunedModels.create") == {"drop": drops, "200": 1}


async def test_retry_info_delay_is_honoured(emulator: Emulator, logs: LogList) -> None:
    emulator.configure(retry_delay=0.3)
    emulator.set_faults({"429": 1.0})
    observer = RecordingObserver()
    # Our own backoff would wait at most 1 ms; only the server's hint makes it 0.3 s.
    policy = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.1)
    async with GeminiClient(base_url=emulator.base_url, api_key=API_KEY, retry=policy, observer=observer) as client:
        started = time.monotonic()
        creating = asyncio.create_task(client.create_tuned_model(create_request("throttled-1")))
        await wait_until(lambda: route_counts(emulator, "tunedModels.create").get("429"), message="the first 429")
        emulator.set_faults({}, replace=True)
        operation = await asyncio.wait_for(creating, timeout=10.0)
    assert time.monotonic() - started >= 0.3
    assert operation.tuned_model_name == "tunedModels/throttled-1"
    [(route, status, delay)] = observer.retries
    assert (route, status) == ("tunedModels.create", "429")
    assert 0.3 <= delay <= 0.33
    assert route_counts(emulator, "tunedModels.create") == {"429": 1, "200": 1}


async def test_exhausted_retries_keep_the_hint(emulator: Emulator, logs: LogList) -> None:
    emulator.set_faults({"429": 1.0})
    policy = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.05)
    async with GeminiClient(base_url=emulator.base_url, api_key=API_KEY, retry=policy) as client:
        with pytest.raises(TransientError) as raised:
            await client.get_tuned_model("tunedModels/any")
    assert raised.value.status == "RESOURCE_EXHAUSTED"
    assert raised.value.retry_delay == pytest.approx(0.05)
    assert route_counts(emulator, "tunedModels.get") == {"429": 3}
    assert [entry["attempt"] for entry in retries(logs)] == [1, 2]


async def test_invalid_argument_is_not_retried(emulator: Emulator, client: GeminiClient, logs: LogList) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await client.create_tuned_model(create_request("too-long-1", display_name="x" * 41))
    error = raised.value
    assert error.http_status == 400
    assert error.status == "INVALID_ARGUMENT"
    assert error.message  # Google's own words, passed through
    assert str(error) == f"INVALID_ARGUMENT (400): {error.message}"
    assert route_counts(emulator, "tunedModels.create") == {"400": 1}
    assert retries(logs) == []


async def test_create_answered_503_after_it_landed(emulator: Emulator, logs: LogList) -> None:
    # One attempt only: the first create takes effect but its answer is lost, as a caller would see it.
    async with GeminiClient(
        base_url=emulator.base_url, api_key=API_KEY, retry=RetryPolicy(max_retries=0, base_delay=0.005)
    ) as impatient:
        emulator.set_faults({"503-after": 1.0})
        with pytest.raises(TransientError) as lost:
            await impatient.create_tuned_model(create_request("lost-answer-1"))
        assert lost.value.http_status == 503
        emulator.set_faults({}, replace=True)
        # The caller's retry names the same model, and meets it.
        with pytest.raises(AlreadyExists) as raised:
            await impatient.create_tuned_model(create_request("lost-answer-1"))
        assert raised.value.http_status == 409
        assert emulator.stats()["creates"]["by_model"]["lost-answer-1"] == {"attempted": 2, "accepted": 1}

        # The caller adopts the model that the first attempt created.
        [operation] = await impatient.find_operations("tunedModels/lost-answer-1")
        assert operation.tuned_model_name == "tunedModels/lost-answer-1"
        done = await finished(impatient, operation.name)
    assert done.model is not None
    assert done.model.state is ModelState.ACTIVE


async def test_a_wrong_key_is_permission_denied(emulator: Emulator, logs: LogList) -> None:
    wrong_key = "AIzaSy-wrong-key-0000000000"
    async with GeminiClient(base_url=emulator.base_url, api_key=wrong_key, retry=PATIENT) as client:
        with pytest.raises(PermissionDenied) as raised:
            await client.get_tuned_model("tunedModels/any")
    assert raised.value.http_status == 403
    assert wrong_key not in str(raised.value)
    assert route_counts(emulator, "tunedModels.get") == {"403": 1}
