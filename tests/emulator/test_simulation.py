"""The tuning simulation and the resources' shapes: progress, snapshots, completion, failures, cancellation,
ids, defaults, enum encoding, patch and the per-model timeline in the stats."""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

import aiohttp
import pytest

from tests.emulator.conftest import BASE_MODEL, call, create, make_config, model_body, ok, wait_done
from tests.waiting import wait_until
from tunekeeper.emulator import Emulator

ID_PATTERN = re.compile(r"[a-z]([a-z0-9-]{0,38}[a-z0-9])?")


def epochs_body(examples: int, epochs: int, batch: int, **extra: Any) -> dict[str, Any]:
    body = model_body(examples=examples, **extra)
    body["tuningTask"]["hyperparameters"] = {"epochCount": epochs, "batchSize": batch}
    return body


async def test_progress_while_running(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(step_seconds=0.02)) as emu:
        operation = await create(session, emu, epochs_body(examples=16, epochs=4, batch=2), "runner")
        url = f"{emu.base_url}/v1beta/{operation['name']}"
        assert operation["metadata"]["totalSteps"] == 32
        seen: list[dict[str, Any]] = []

        async def finished() -> dict[str, Any] | None:
            current: dict[str, Any] = await ok(session, "GET", url)
            seen.append(current)
            return current if current.get("done") else None

        final: dict[str, Any] = await wait_until(
            finished, within=10.0, interval=0.01, message="the operation to finish"
        )
        running = [op for op in seen if not op.get("done") and op["metadata"].get("completedSteps")]
        assert running, "no poll saw the job part-way"
        steps = [op["metadata"].get("completedSteps", 0) for op in seen]
        assert steps == sorted(steps)
        for op in running:
            metadata = op["metadata"]
            assert metadata["totalSteps"] == 32
            assert metadata["completedPercent"] == pytest.approx(metadata["completedSteps"] * 100 / 32)
            assert metadata["tunedModel"] == "tunedModels/runner"
            # Epochs end at steps 8, 16, 24, 32: one snapshot per completed epoch.
            assert len(metadata.get("snapshots", [])) == metadata["completedSteps"] // 8
        assert final is seen[-1]
        assert [snapshot["step"] for snapshot in final["metadata"]["snapshots"]] == [8, 16, 24, 32]
        assert final["response"]["state"] == "ACTIVE"

        model = await ok(session, "GET", f"{emu.base_url}/v1/tunedModels/runner")
        assert model["tuningTask"]["snapshots"] == final["metadata"]["snapshots"]
        timeline = emu.stats()["models"]["runner"]
        assert timeline["state"] == "ACTIVE"
        assert timeline["done_at"] == pytest.approx(timeline["created_at"] + 32 * 0.02)
        assert timeline["operation_gets"] == len(seen)


async def test_running_model_shape(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(step_seconds=3600.0)) as emu:
        await create(session, emu, model_body("slow"), "slow")
        model = await ok(session, "GET", f"{emu.base_url}/v1beta/tunedModels/slow")
        assert model["state"] == "CREATING"
        assert "completeTime" not in model["tuningTask"]
        assert "startTime" in model["tuningTask"]
        assert "trainingData" not in model["tuningTask"]
        operation = await ok(session, "GET", f"{emu.base_url}/v1/tunedModels/slow/operations")
        (only,) = operation["operations"]
        assert "done" not in only
        assert "completedSteps" not in only["metadata"]  # proto3 JSON leaves zero values out


async def test_failures_follow_the_seed(session: aiohttp.ClientSession) -> None:
    outcomes = []
    for _ in range(2):
        async with Emulator(make_config(fail_rate=0.5, seed=3)) as emu:
            operations = [await create(session, emu, model_body(f"m {i}"), f"m-{i}") for i in range(12)]
            finals = [await wait_done(session, emu, operation["name"]) for operation in operations]
            outcomes.append(["error" in final for final in finals])
            for final in finals:
                if "error" in final:
                    assert final["error"]["code"] == 13
                    assert final["error"]["message"]
                    assert "response" not in final
                    model_id = final["metadata"]["tunedModel"].removeprefix("tunedModels/")
                    model = await ok(session, "GET", f"{emu.base_url}/v1beta/tunedModels/{model_id}")
                    assert model["state"] == "FAILED"
                    assert emu.stats()["models"][model_id]["state"] == "FAILED"
    assert outcomes[0] == outcomes[1]
    assert any(outcomes[0])
    assert not all(outcomes[0])


async def test_cancel(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(step_seconds=3600.0)) as emu:
        operation = await create(session, emu, model_body(), "doomed")
        assert emu.stats()["current_tuning"] == 1
        for version in ("v1", "v1beta"):  # the second cancel is a no-op on a finished operation
            status, answer = await call(session, "POST", f"{emu.base_url}/{version}/{operation['name']}:cancel", {})
            assert (status, answer) == (200, {})
        cancelled = await ok(session, "GET", f"{emu.base_url}/v1/{operation['name']}")
        assert cancelled["done"] is True
        assert cancelled["error"]["code"] == 1
        model = await ok(session, "GET", f"{emu.base_url}/v1beta/tunedModels/doomed")
        assert model["state"] == "FAILED"
        assert "completeTime" in model["tuningTask"]
        stats = emu.stats()
        assert stats["current_tuning"] == 0
        assert stats["models"]["doomed"]["state"] == "FAILED"
        done_ops = await ok(
            session, "GET", f"{emu.base_url}/v1/tunedModels/doomed/operations", params={"filter": "done=true"}
        )
        assert [op["name"] for op in done_ops["operations"]] == [operation["name"]]
        running_ops = await ok(
            session, "GET", f"{emu.base_url}/v1/tunedModels/doomed/operations", params={"filter": "done=false"}
        )
        assert running_ops == {}


async def test_speed_change_applies_to_running_models(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(step_seconds=3600.0)) as emu:
        operation = await create(session, emu, model_body(), "waiting")
        emu.configure(step_seconds=0.001)
        final = await wait_done(session, emu, operation["name"])
        assert final["response"]["state"] == "ACTIVE"


async def test_tuning_runs_no_task_per_model(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(step_seconds=3600.0)) as emu:
        await create(session, emu, model_body(), "idle-0")
        before = len(asyncio.all_tasks())  # the test and the server's task for the keep-alive connection
        for index in range(1, 50):
            await create(session, emu, model_body(), f"idle-{index}")
        assert len(asyncio.all_tasks()) == before
        assert emu.stats()["current_tuning"] == 50


async def test_generated_ids_follow_the_display_name_and_the_seed(session: aiohttp.ClientSession) -> None:
    names = []
    for _ in range(2):
        async with Emulator(make_config(seed=5)) as emu:
            batch = []
            for display_name in ("Number Generator Model!", "42 answers", "", "x" * 40):
                operation = await create(session, emu, model_body(display_name))
                batch.append(operation["metadata"]["tunedModel"].removeprefix("tunedModels/"))
            names.append(batch)
    assert names[0] == names[1]
    for model_id in names[0]:
        assert ID_PATTERN.fullmatch(model_id), model_id
    assert re.fullmatch(r"number-generator-model-[a-z0-9]{12}", names[0][0])
    assert names[0][1].startswith("model-42-answers-")
    assert names[0][2].startswith("tuned-model-")
    assert len(names[0][3]) == 40


@pytest.mark.parametrize(
    ("examples", "hyperparameters", "expected", "steps"),
    [
        (15, {}, {"epochCount": 5, "batchSize": 4, "learningRate": 0.001}, 19),
        (501, {}, {"epochCount": 5, "batchSize": 16, "learningRate": 0.0002}, 157),
        (
            10,
            {"epoch_count": 3, "batch_size": 4, "learning_rate_multiplier": 1.5},
            {"epochCount": 3, "batchSize": 4, "learningRateMultiplier": 1.5},
            8,
        ),
    ],
)
async def test_hyperparameter_defaults(
    emulator: Emulator,
    session: aiohttp.ClientSession,
    examples: int,
    hyperparameters: dict[str, Any],
    expected: dict[str, Any],
    steps: int,
) -> None:
    body = model_body(examples=examples)
    body["tuningTask"]["hyperparameters"] = hyperparameters
    operation = await create(session, emulator, body, "defaults")
    assert (
        operation["metadata"]["totalSteps"]
        == steps
        == math.ceil(examples * expected["epochCount"] / expected["batchSize"])
    )
    model = await ok(session, "GET", f"{emulator.base_url}/v1beta/tunedModels/defaults")
    assert model["tuningTask"]["hyperparameters"] == expected


async def test_int_enum_encoding(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    operation = await create(session, emulator, model_body(), "enums")
    params = {"$alt": "json;enum-encoding=int"}
    model = await ok(session, "GET", f"{emulator.base_url}/v1beta/tunedModels/enums", params=params)
    assert model["state"] in {1, 2}
    final = await wait_done(session, emulator, operation["name"])
    done = await ok(session, "GET", f"{emulator.base_url}/v1/{final['name']}", params=params)
    assert done["response"]["state"] == 2
    listing = await ok(session, "GET", f"{emulator.base_url}/v1beta/tunedModels", params=params)
    assert [model["state"] for model in listing["tunedModels"]] == [2]
    # Unencoded, as Google's clients send it in the URL.
    url = f"{emulator.base_url}/v1beta/tunedModels/enums?$alt=json;enum-encoding=int"
    async with session.post(
        url.replace("/enums?", "/enums:generateContent?"), json={"contents": [{"parts": [{"text": "in 1"}]}]}
    ) as response:
        answer = await response.json()
    assert answer["candidates"][0]["finishReason"] == 1
    assert answer["candidates"][0]["content"]["parts"][0]["text"] == "out 1"
    named = await ok(session, "GET", f"{emulator.base_url}/v1beta/tunedModels/enums")
    assert named["state"] == "ACTIVE"


async def test_tuning_from_a_tuned_model(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    first = await create(session, emulator, model_body("first"), "first")
    await wait_done(session, emulator, first["name"])
    body = model_body("second")
    del body["baseModel"]
    body["tuned_model_source"] = {"tuned_model": "tunedModels/first"}
    await create(session, emulator, body, "second")
    model = await ok(session, "GET", f"{emulator.base_url}/v1beta/tunedModels/second")
    assert "baseModel" not in model
    assert model["tunedModelSource"] == {"tunedModel": "tunedModels/first", "baseModel": BASE_MODEL}


async def test_patch(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    await create(session, emulator, model_body("before", description="old"), "patched")
    url = f"{emulator.base_url}/v1beta/tunedModels/patched"
    original = await ok(session, "GET", url)
    status, patched = await call(
        session,
        "PATCH",
        url,
        {"display_name": "after", "description": "new", "temperature": 0.5},
        params={"updateMask": "display_name,description"},
    )
    assert status == 200, patched
    assert (patched["displayName"], patched["description"], patched["temperature"]) == ("after", "new", 1.0)
    assert patched["updateTime"] >= original["updateTime"]
    # Without a mask, the fields present are updated.
    status, patched = await call(session, "PATCH", url, {"topK": 10, "topP": 0.5})
    assert (status, patched["topK"], patched["topP"], patched["displayName"]) == (200, 10, 0.5, "after")
    fetched = await ok(session, "GET", url)
    assert fetched["topK"] == 10
