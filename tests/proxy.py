"""A rule-driven HTTP proxy on 127.0.0.1, between the daemon and the emulator, for tests of requests that land
late and of answers that arrive mangled.

The emulator's own faults act when a request arrives: they cannot make a request take effect after its client
has given up on it, nor while the job it belongs to moves on. The proxy can. A request matching a rule is held,
not forwarded; its client either waits for the answer (`drop=False`) or sees its connection dropped at once
(`drop=True`, a lost answer). The test releases a held request when it chooses: it then reaches the emulator,
and the answer goes to the client if the client still waits. Everything else is forwarded as it comes.

    async with HoldingProxy(emulator.base_url) as proxy:
        creates = proxy.hold("POST", r"/tunedModels$", drop=True)
        ...                                   # point the daemon at proxy.base_url
        await proxy.release(creates.held[0])  # the create lands now

`corrupt` mangles a seeded share of the successful JSON answers to matching requests on their way back (cut
short, not JSON, another type, fields emptied or of the wrong type), as a faulty middlebox or a buggy service
would: the request itself took effect.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

# Hop-by-hop headers, and those aiohttp sets itself from the body it sends.
_NOT_FORWARDED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}
)


@dataclass
class Held:
    """A request the proxy holds: what it will send upstream, and the client's wait for the answer (None once
    the client's connection was dropped)."""

    method: str
    path: str  # with its query string
    headers: dict[str, str]
    body: bytes
    answer: asyncio.Future[web.Response] | None
    released: bool = False


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    drop: bool
    active: bool = True
    held: list[Held] = field(default_factory=list)

    def matches(self, request: web.Request) -> bool:
        return self.active and request.method == self.method and self.path.search(request.path) is not None


@dataclass
class Corruption:
    method: str
    path: re.Pattern[str]
    rate: float
    draws: random.Random
    mangled: list[str] = field(default_factory=list)  # the path of each answer mangled, in order

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and self.path.search(path.split("?", 1)[0]) is not None


def _wrong_types(value: object, draws: random.Random) -> object:
    """`value` with some of its fields' values replaced by values of another type."""
    if isinstance(value, dict):
        return {key: (draws.choice([None, 7, "x", [], {}]) if draws.random() < 0.3 else _wrong_types(item, draws))
                for key, item in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [_wrong_types(item, draws) for item in value]
    return value


def _mangle(body: bytes, draws: random.Random) -> bytes:
    document = json.loads(body)
    how = draws.choice(["cut", "not json", "list", "empty", "wrong types", "huge number"])
    if how == "cut":
        return body[: max(1, len(body) // 2)]
    if how == "not json":
        return b"<html><body>502 Bad Gateway</body></html>"
    if how == "list":
        return json.dumps([document]).encode()
    if how == "empty":
        return b"{}"
    if how == "huge number":
        return body.replace(b'"', b"1e999", 1) if b'"' in body else b"1e999"
    return json.dumps(_wrong_types(document, draws)).encode()


class HoldingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.corruptions: list[Corruption] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def hold(self, method: str, path: str, *, drop: bool) -> Rule:
        """Hold every request with this method whose path matches the regular expression `path`, until the rule
        is made inactive (`rule.active = False`)."""
        rule = Rule(method, re.compile(path), drop)
        self.rules.append(rule)
        return rule

    def corrupt(self, method: str, path: str, *, rate: float, seed: int = 1) -> Corruption:
        """Mangle a share `rate` of the 2xx JSON answers to requests with this method whose path matches."""
        rule = Corruption(method, re.compile(path), rate, random.Random(seed))
        self.corruptions.append(rule)
        return rule

    async def release(self, held: Held) -> int:
        """Send a held request upstream now; the answer goes to its client if it still waits. The status."""
        held.released = True
        response = await self._forward(held.method, held.path, held.headers, held.body)
        if held.answer is not None and not held.answer.done():
            held.answer.set_result(response)
        return response.status

    async def __aenter__(self) -> HoldingProxy:
        self._session = aiohttp.ClientSession(auto_decompress=True)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for rule in self.rules:
            for held in rule.held:
                if held.answer is not None and not held.answer.done():
                    held.answer.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        for rule in self.rules:
            if rule.matches(request):
                waits = None if rule.drop else asyncio.get_running_loop().create_future()
                rule.held.append(Held(request.method, request.path_qs, headers, body, waits))
                if waits is None:
                    if request.transport is not None:
                        request.transport.abort()  # the client sees the server disconnect, with no answer
                    return web.Response(status=500)  # never reaches the client
                return await waits
        return await self._forward(request.method, request.path_qs, headers, body)

    async def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> web.Response:
        assert self._session is not None
        async with self._session.request(
            method, self.upstream + path, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            content = await upstream.read()
            answer_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _NOT_FORWARDED}
        if 200 <= upstream.status < 300 and content[:1] in (b"{", b"["):
            for rule in self.corruptions:
                if rule.matches(method, path) and rule.draws.random() < rule.rate:
                    content = _mangle(content, rule.draws)
                    rule.mangled.append(path)
                    break
        return web.Response(status=upstream.status, headers=answer_headers, body=content)
