"""Fixtures: small real HTTP servers on 127.0.0.1 that answer what a test scripts, for responses the emulator
cannot produce (proxy error pages, garbled bodies, dropped connections)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from tunekeeper.emulator import Emulator, EmulatorConfig

API_KEY = "AIzaSy-test-key-do-not-leak-7f3a9c"


@dataclass
class Reply:
    """One scripted answer. `hang` holds the response until the server stops (for timeouts)."""

    status: int = 200
    body: str | bytes = "{}"
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    hang: bool = False

    @classmethod
    def json(cls, document: object, status: int = 200, **headers: str) -> Reply:
        return cls(status=status, body=json.dumps(document), headers=headers)

    @classmethod
    def google_error(cls, http: int, status: str, message: str, details: list[object] | None = None) -> Reply:
        error: dict[str, object] = {"code": http, "message": message, "status": status}
        if details:
            error["details"] = details
        return cls.json({"error": error}, status=http)


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    """Answers every request with the next scripted reply (the last one repeats) and records what it saw."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.seen: list[Seen] = []
        self.base_url = ""
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def script(self, *replies: Reply) -> None:
        self.replies = list(replies)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers), await request.read()))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply.hang:
            await self._released.wait()
        body = reply.body.encode() if isinstance(reply.body, str) else reply.body
        return web.Response(status=reply.status, body=body, headers=reply.headers, content_type=reply.content_type)


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[RawHandler], Awaitable[str]]]:
    """A plain TCP server, for replies no HTTP framework would send (dropped connections, short bodies)."""
    servers: list[asyncio.Server] = []

    async def start(handler: RawHandler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """The emulator on loopback, accepting only API_KEY, without faults (tests add their own)."""
    config = EmulatorConfig(
        host="127.0.0.1",
        port=0,
        api_keys=frozenset({API_KEY}),
        step_seconds=0.01,
        fail_rate=0.0,
        faults={},
        latency=None,
        retry_delay=0.05,
        max_active_tuning=None,
        requests_per_minute=None,
        seed=0,
        log_requests=False,
    )
    async with Emulator(config) as emu:
        yield emu
