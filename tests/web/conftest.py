"""Fixtures for the status page: the page's aiohttp application on a migrated database, over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tunekeeper.config import Settings
from tunekeeper.db.engine import make_engine
from tunekeeper.db.store import JobStore
from tunekeeper.web.app import StatusPage

TOKEN = "web-token-5c1e9a77d2"

PageClient = Callable[..., Awaitable[tuple[TestClient[web.Request, web.Application], StatusPage]]]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    engine = make_engine(database_url)
    yield JobStore(engine)
    await engine.dispose()


@pytest.fixture
async def page_client(database_url: str) -> AsyncIterator[PageClient]:
    """`await page_client(actions=True, base_path="/tk")`: a client of a server that serves only the page."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(**web_settings: Any) -> tuple[TestClient[web.Request, web.Application], StatusPage]:
        if web_settings.get("actions"):
            web_settings.setdefault("token", TOKEN)
        settings = Settings(database={"url": database_url}, web=web_settings)  # type: ignore[arg-type]
        app = web.Application()
        page = StatusPage.from_settings(settings)
        page.mount(app)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client, page

    yield start
    for client in clients:
        await client.close()
