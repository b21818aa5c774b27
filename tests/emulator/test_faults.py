"""Injected faults, latency, quotas and the control endpoints: seeded, reproducible, never on /emulator/."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.emulator.conftest import KEY_HEADERS, call, create, make_config, model_body, wait_done
from tunekeeper.emulator import Emulator

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"


async def statuses(emu: Emulator, count: int) -> list[int | str]:
    """Status of `count` sequential requests ("drop" for a closed connection).

    The requests are POSTs (a cancel of an operation that does not exist: 404 unless a fault strikes) because
    aiohttp silently retries an idempotent request once when the connection drops, which would hide drops
    and take a second fault draw.
    """
    seen: list[int | str] = []
    async with aiohttp.ClientSession(headers=KEY_HEADERS) as session:
        for _ in range(count):
            try:
                async with session.post(f"{emu.base_url}/v1/tunedModels/x/operations/y:cancel", json={}) as response:
                    await response.read()
                    seen.append(response.status)
            except aiohttp.ServerDisconnectedError:
                seen.append("drop")
    return seen


async def test_faults_are_seeded_and_reproducible() -> None:
    faults = {"429": 0.25, "500": 0.1, "503": 0.15, "drop": 0.1}
    runs = []
    for seed in (11, 11, 12):
        async with Emulator(make_config(faults=faults, seed=seed)) as emu:
            runs.append(await statuses(emu, 60))
            stats = emu.stats()
        assert stats["faults_injected"] == {
            kind: runs[-1].count(int(kind) if kind.isdigit() else kind)
            for kind in faults
            if runs[-1].count(int(kind) if kind.isdigit() else kind)
        }
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert {404, 429, 500, 503, "drop"} <= set(runs[0])


async def test_reset_restarts_the_fault_sequence() -> None:
    async with Emulator(make_config(faults={"429": 0.5})) as emu:
        first = await statuses(emu, 20)
        emu.reset()
        assert await statuses(emu, 20) == first


async def test_injected_429_carries_retry_info_and_retry_after(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(faults={"429": 1.0}, retry_delay=2.0)) as emu:
        async with session.get(f"{emu.base_url}/v1beta/tunedModels") as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "2"
            error = (await response.json())["error"]
        assert error["status"] == "RESOURCE_EXHAUSTED"
        assert error["details"] == [{"@type": RETRY_INFO, "retryDelay": "2s"}]
        emu.configure(retry_delay=0.05)
        status, answer = await call(session, "GET", f"{emu.base_url}/v1beta/tunedModels")
        assert status == 429
        assert answer["error"]["details"][0]["retryDelay"] == "0.05s"


async def test_pre_fault_on_create_creates_nothing(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(faults={"503": 1.0})) as emu:
        url = f"{emu.base_url}/v1beta/tunedModels"
        status, answer = await call(session, "POST", url, model_body(), params={"tunedModelId": "once"})
        assert (status, answer["error"]["status"]) == (503, "UNAVAILABLE")
        emu.set_faults({"503": 0.0})
        status, _ = await call(session, "GET", f"{emu.base_url}/v1beta/tunedModels/once")
        assert status == 404
        creates = emu.stats()["creates"]
        assert (creates["attempted"], creates["accepted"]) == (1, 0)
        assert creates["by_model"]["once"] == {"attempted": 1, "accepted": 0}


@pytest.mark.parametrize("kind", ["503-after", "drop-after"])
async def test_after_faults_create_the_model_and_lose_the_answer(session: aiohttp.ClientSession, kind: str) -> None:
    async with Emulator(make_config(faults={kind: 1.0})) as emu:
        url = f"{emu.base_url}/v1beta/tunedModels"
        if kind == "503-after":
            status, answer = await call(session, "POST", url, model_body(), params={"tunedModelId": "lost"})
            assert (status, answer["error"]["status"]) == (503, "UNAVAILABLE")
        else:
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await call(session, "POST", url, model_body(), params={"tunedModelId": "lost"})
        emu.set_faults({}, replace=True)
        status, model = await call(session, "GET", f"{emu.base_url}/v1beta/tunedModels/lost")
        assert status == 200
        assert model["state"] in {"CREATING", "ACTIVE"}
        # The client's retry meets the model it created: 409, the daemon's adoption path.
        status, answer = await call(session, "POST", url, model_body(), params={"tunedModelId": "lost"})
        assert (status, answer["error"]["status"]) == (409, "ALREADY_EXISTS")
        stats = emu.stats()
        assert stats["creates"]["by_model"]["lost"] == {"attempted": 2, "accepted": 1}
        assert stats["models"]["lost"]["creates_accepted"] == 1
        route_statuses = stats["requests"]["by_route_status"]["tunedModels.create"]
        assert route_statuses == {("503" if kind == "503-after" else "drop"): 1, "409": 1}


async def test_drop_closes_the_connection_before_anything_happens(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(faults={"drop": 1.0})) as emu:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await call(
                session, "POST", f"{emu.base_url}/v1beta/tunedModels", model_body(), params={"tunedModelId": "d"}
            )
        emu.set_faults({"drop": 0.0})
        status, _ = await call(session, "GET", f"{emu.base_url}/v1beta/tunedModels/d")
        assert status == 404


async def test_faults_never_touch_control_routes(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(faults={"429": 0.5, "drop": 0.5})) as emu, aiohttp.ClientSession() as bare:
        for _ in range(20):
            status, stats = await call(bare, "GET", f"{emu.base_url}/emulator/stats")
            assert status == 200
        assert stats["requests"]["total"] == 0  # control requests are not counted
        status, settings = await call(
            bare, "POST", f"{emu.base_url}/emulator/faults", {"faults": {}, "replace_faults": True}
        )
        assert (status, settings["faults"]) == (200, {})
        assert await statuses(emu, 5) == [404] * 5


async def test_concurrent_tuning_quota(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(max_active_tuning=2, step_seconds=3600.0)) as emu:
        first = await create(session, emu, model_body("one"), "one")
        await create(session, emu, model_body("two"), "two")
        status, answer = await call(
            session, "POST", f"{emu.base_url}/v1beta/tunedModels", model_body("three"), params={"tunedModelId": "three"}
        )
        assert status == 429
        error = answer["error"]
        assert error["status"] == "RESOURCE_EXHAUSTED"
        (quota,) = [detail for detail in error["details"] if detail["@type"] == QUOTA_FAILURE]
        assert quota["violations"][0]["quotaMetric"]
        stats = emu.stats()
        assert (stats["current_tuning"], stats["max_concurrent_tuning"]) == (2, 2)
        # A cancelled model no longer counts.
        status, _ = await call(session, "POST", f"{emu.base_url}/v1/{first['name']}:cancel", {})
        assert status == 200
        await create(session, emu, model_body("three"), "three")
        # Finished models no longer count either: speed up, wait for them, and create two more.
        emu.configure(step_seconds=0.001)
        status, listing = await call(session, "GET", f"{emu.base_url}/v1beta/tunedModels")
        for model in listing["tunedModels"]:
            status, operations = await call(session, "GET", f"{emu.base_url}/v1/{model['name']}/operations")
            await wait_done(session, emu, operations["operations"][0]["name"])
        emu.configure(step_seconds=3600.0)
        await create(session, emu, model_body("four"), "four")
        await create(session, emu, model_body("five"), "five")
        stats = emu.stats()
        assert (stats["current_tuning"], stats["max_concurrent_tuning"]) == (2, 2)


async def test_requests_per_minute(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(requests_per_minute=3)) as emu:
        url = f"{emu.base_url}/v1beta/tunedModels"
        for _ in range(3):
            status, _ = await call(session, "GET", url)
            assert status == 200
        async with session.get(url) as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) >= 59
            error = (await response.json())["error"]
        types = [detail["@type"] for detail in error["details"]]
        assert types == [RETRY_INFO, QUOTA_FAILURE]
        emu.configure(requests_per_minute=None)
        status, _ = await call(session, "GET", url)
        assert status == 200


async def test_latency_is_added(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(latency=(0.05, 0.06))) as emu:
        started = time.monotonic()
        status, _ = await call(session, "GET", f"{emu.base_url}/v1beta/tunedModels")
        assert status == 200
        assert time.monotonic() - started >= 0.05
        started = time.monotonic()
        status, _ = await call(session, "GET", f"{emu.base_url}/emulator/health")
        assert status == 200
        assert time.monotonic() - started < 0.05  # control routes are never delayed


async def test_control_endpoints(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config()) as emu, aiohttp.ClientSession() as bare:
        url = f"{emu.base_url}/emulator/faults"
        status, settings = await call(
            bare,
            "POST",
            url,
            {
                "faults": {"429": 1.0},
                "latency": "1ms..2ms",
                "fail_rate": 0.5,
                "diverge_rate": 0.25,
                "nul_rate": 0.5,
                "step_seconds": 0.01,
                "max_active_tuning": 3,
            },
        )
        assert status == 200
        assert settings["faults"] == {"429": 1.0}
        assert settings["latency"] == [0.001, 0.002]
        assert (settings["fail_rate"], settings["step_seconds"], settings["max_active_tuning"]) == (0.5, 0.01, 3)
        assert (settings["diverge_rate"], settings["nul_rate"]) == (0.25, 0.5)
        status, _ = await call(session, "GET", f"{emu.base_url}/v1beta/tunedModels")
        assert status == 429
        for bad in (
            {"faults": {"418": 0.1}},
            {"faults": {"429": 2}},
            {"step_seconds": 0},
            {"colour": "red"},
            {"diverge_rate": 2},
        ):
            status, answer = await call(bare, "POST", url, bad)
            assert (status, answer["error"]["status"]) == (400, "INVALID_ARGUMENT"), bad
        status, current = await call(bare, "GET", url)
        assert current == settings  # the rejected changes changed nothing
        status, answer = await call(bare, "GET", f"{emu.base_url}/emulator/nothing")
        assert (status, answer["error"]["status"]) == (404, "NOT_FOUND")

        emu.set_faults({"429": 0.0})
        await create(session, emu, model_body(), "kept")
        assert emu.stats()["models"]["kept"]["state"] == "CREATING"
        status, answer = await call(bare, "POST", f"{emu.base_url}/emulator/reset")
        assert (status, answer) == (200, {})
        stats = emu.stats()
        assert stats["models"] == {}
        assert stats["requests"]["total"] == 0
        assert stats["settings"]["fail_rate"] == 0.5  # settings survive a reset


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="add up"):
        make_config(faults={"429": 0.6, "503": 0.6})
    with pytest.raises(ValueError, match="unknown fault kind"):
        make_config(faults={"404": 0.1})
    with pytest.raises(ValueError, match="step_seconds"):
        make_config(step_seconds=0)
    with pytest.raises(ValueError, match="max_active_tuning"):
        make_config(max_active_tuning=0)


async def test_after_faults_lose_error_answers_too(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(faults={"503-after": 1.0})) as emu:
        status, answer = await call(session, "GET", f"{emu.base_url}/v1beta/tunedModels/missing")
        assert (status, answer["error"]["status"]) == (503, "UNAVAILABLE")
        assert emu.stats()["requests"]["by_route_status"] == {"tunedModels.get": {"503": 1}}
