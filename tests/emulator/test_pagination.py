"""tunedModels.list: pages, page tokens, page sizes and filters."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.emulator.conftest import call, create, model_body
from tunekeeper.emulator import Emulator


async def list_all(
    session: aiohttp.ClientSession, emu: Emulator, page_size: int, **params: str
) -> tuple[list[str], list[int]]:
    """Every model name over all pages, and the size of each page."""
    names: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        query = {"pageSize": str(page_size), **params}
        if token:
            query["pageToken"] = token
        status, page = await call(session, "GET", f"{emu.base_url}/v1beta/tunedModels", params=query)
        assert status == 200, page
        names.extend(model["name"] for model in page.get("tunedModels", []))
        sizes.append(len(page.get("tunedModels", [])))
        token = page.get("nextPageToken", "")
        if not token:
            return names, sizes


async def create_many(session: aiohttp.ClientSession, emu: Emulator, count: int, prefix: str = "m") -> list[str]:
    names = []
    for index in range(count):
        operation = await create(session, emu, model_body(f"{prefix} {index}"), f"{prefix}-{index:04d}")
        names.append(operation["metadata"]["tunedModel"])
    return names


async def test_every_model_once_in_a_stable_order(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    created = await create_many(session, emulator, 25)
    names, sizes = await list_all(session, emulator, 7)
    assert names == created
    assert sizes == [7, 7, 7, 4]
    again, _ = await list_all(session, emulator, 7)
    assert again == names


async def test_changes_between_pages_neither_repeat_nor_skip(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    created = await create_many(session, emulator, 10)
    url = f"{emulator.base_url}/v1beta/tunedModels"
    status, first = await call(session, "GET", url, params={"pageSize": "4"})
    assert status == 200
    seen = [model["name"] for model in first["tunedModels"]]
    # Delete one already served and one not yet served; add one.
    for name in (created[0], created[6]):
        status, _ = await call(session, "DELETE", f"{emulator.base_url}/v1beta/{name}")
        assert status == 200
    added = (await create(session, emulator, model_body("late"), "late"))["metadata"]["tunedModel"]
    token = first["nextPageToken"]
    while token:
        status, page = await call(session, "GET", url, params={"pageSize": "4", "pageToken": token})
        assert status == 200, page
        seen.extend(model["name"] for model in page["tunedModels"])
        token = page.get("nextPageToken")
    assert seen == [*created[:6], *created[7:], added]


async def test_page_token_only_valid_with_the_same_parameters(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    await create_many(session, emulator, 5)
    url = f"{emulator.base_url}/v1beta/tunedModels"
    status, first = await call(session, "GET", url, params={"pageSize": "2"})
    assert status == 200
    token = first["nextPageToken"]
    for other in ({"pageSize": "3"}, {"pageSize": "2", "filter": "m"}, {}):
        status, answer = await call(session, "GET", url, params={**other, "pageToken": token})
        assert status == 400, other
        assert answer["error"]["status"] == "INVALID_ARGUMENT"
        assert "page_token" in answer["error"]["message"]
    # The same parameters, in snake_case, still work.
    status, second = await call(session, "GET", url, params={"page_size": "2", "page_token": token})
    assert status == 200
    assert len(second["tunedModels"]) == 2


async def test_page_size_default_and_clamp(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    async def one(index: int) -> None:
        await create(session, emulator, model_body(f"bulk {index}", examples=1), f"bulk-{index:04d}")

    for start in range(0, 1001, 100):
        await asyncio.gather(*(one(index) for index in range(start, min(start + 100, 1001))))
    url = f"{emulator.base_url}/v1/tunedModels"
    status, page = await call(session, "GET", url)
    assert status == 200
    assert len(page["tunedModels"]) == 10
    status, page = await call(session, "GET", url, params={"pageSize": "5000"})
    assert status == 200
    assert len(page["tunedModels"]) == 1000
    status, rest = await call(session, "GET", url, params={"pageSize": "5000", "pageToken": page["nextPageToken"]})
    assert status == 200
    assert [model["name"] for model in rest["tunedModels"]] == ["tunedModels/bulk-1000"]
    assert "nextPageToken" not in rest


async def test_filters(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("alpha", model_body("Sales Summary", description="weekly numbers")),
        ("beta", model_body("number generator", description="counts up")),
        ("gamma", model_body("sales forecast", description="Numbers ahead")),
    ]
    for model_id, body in bodies:
        await create(session, emulator, body, model_id)

    async def matching(text: str) -> list[str]:
        names, _ = await list_all(session, emulator, 10, filter=text)
        return [name.removeprefix("tunedModels/") for name in names]

    assert await matching("sales") == ["alpha", "gamma"]
    assert await matching("numbers") == ["alpha", "gamma"]  # description, case-insensitive
    assert await matching("displayName:number") == ["beta"]
    assert await matching("description:numbers") == ["alpha", "gamma"]
    assert await matching('"sales summary"') == ["alpha"]
    assert await matching("sales ahead") == ["gamma"]  # every term must match
    assert await matching("owner:me") == ["alpha", "beta", "gamma"]
    assert await matching("readers:everyone") == []
    status, empty = await call(session, "GET", f"{emulator.base_url}/v1beta/tunedModels", params={"filter": "zzz"})
    assert (status, empty) == (200, {})
