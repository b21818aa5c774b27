"""The aiohttp application: one dispatcher in front of every path of every surface.

For an API request, in this order: routing (the surfaces are asked in turn), added latency, the route's
authentication, its body, the route's count of received requests, the fault draw (a pre-fault answers before
anything takes effect), the requests-per-minute limit, the handler, then a post-fault (`503-after`,
`drop-after`: the request took effect but its answer is lost). A path no surface knows answers 404 after the
latency. `/emulator/*` skips all of that.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import structlog
from aiohttp import web

from tunekeeper.emulator.config import PRE_FAULTS
from tunekeeper.emulator.control import handle_control
from tunekeeper.emulator.errors import ApiError, quota_failure, retry_after_header, retry_info
from tunekeeper.emulator.gemini.routes import GeminiSurface
from tunekeeper.emulator.oauth.routes import OAuthSurface
from tunekeeper.emulator.routing import Call, Resolved, Surface, google_error_body
from tunekeeper.emulator.state import EmulatorState
from tunekeeper.emulator.storage.routes import StorageSurface
from tunekeeper.emulator.vertex.routes import VertexTuningSurface
from tunekeeper.emulator.vertex.serving import VertexServingSurface

MAX_BODY_BYTES = 64 * 1024 * 1024
_JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
_log = structlog.get_logger("tunekeeper.emulator")


def injected_error(kind: str, retry_delay: float) -> ApiError:
    if kind == "429":
        return ApiError(
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota).",
            [retry_info(retry_delay)],
            retry_after_header(retry_delay),
        )
    if kind == "500":
        return ApiError("INTERNAL", "An internal error has occurred. Please retry or report in the documentation.")
    return ApiError("UNAVAILABLE", "The service is currently unavailable.")


def rate_limited(wait: float, limit: int) -> ApiError:
    return ApiError(
        "RESOURCE_EXHAUSTED",
        f"Quota exceeded: at most {limit} requests per minute.",
        [
            retry_info(wait),
            quota_failure(
                "generativelanguage.googleapis.com/requests",
                "RequestsPerMinutePerProject",
                f"Limit: {limit} requests per minute.",
            ),
        ],
        retry_after_header(wait),
    )


def wants_int_enums(query: Mapping[str, str]) -> bool:
    alt = query.get("$alt") or query.get("alt")
    return alt is not None and "enum-encoding=int" in alt


def json_response(payload: dict[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    response_headers = {"Content-Type": _JSON_CONTENT_TYPE}
    if headers:
        response_headers.update(headers)
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, headers=response_headers)


def drop_connection(request: web.Request) -> web.Response:
    """Close the connection without an answer; the client sees the server disconnect."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=500)  # never reaches the client


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError("INVALID_ARGUMENT", f"Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes.") from None


HEALTH_PATH = "/emulator/health"  # open to all, like a load balancer's probe: it tells and changes nothing


def authenticate_control(api_keys: frozenset[str], request: web.Request) -> None:
    """With keys configured, control routes (which change faults, speed and quotas, and show every model's
    timeline) need one of them, as the API does: `x-goog-api-key`, `?key=` or `Authorization: Bearer`."""
    if not api_keys:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    offered = request.headers.get("x-goog-api-key") or request.query.get("key")
    if not offered and scheme.lower() == "bearer":
        offered = token.strip()
    if not offered:
        raise ApiError("UNAUTHENTICATED", "The emulator's control routes need one of its API keys.")
    if offered not in api_keys:
        raise ApiError("PERMISSION_DENIED", "API key not valid. Please pass a valid API key.")


class Dispatcher:
    def __init__(self, state: EmulatorState, surfaces: Sequence[Surface]) -> None:
        self.state = state
        self.surfaces = tuple(surfaces)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/emulator/"):
            return await self._control(request)
        return await self._api(request)

    def resolve(self, request: web.Request) -> Resolved | None:
        method, path = request.method, request.path
        raw_path = request.raw_path.partition("?")[0]
        for surface in self.surfaces:
            resolved = surface.resolve(method, path, raw_path)
            if resolved is not None:
                return resolved
        return None

    async def _control(self, request: web.Request) -> web.Response:
        try:
            if request.path != HEALTH_PATH:
                authenticate_control(self.state.api_keys, request)
            raw = await read_body(request) if request.method == "POST" else b""
            return json_response(handle_control(self.state, request.method, request.path, raw))
        except ApiError as error:
            return json_response(error.body(), error.http_code, error.headers)

    async def _api(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        state = self.state
        method = request.method
        path = request.path
        resolved = self.resolve(request)
        route_name = resolved.route.name if resolved is not None else "unknown"
        render_error = resolved.route.render_error if resolved is not None else google_error_body
        fault: str | None = None
        outcome = "cancelled"  # kept if the client goes away while the request waits
        try:
            try:
                delay = state.faults.delay()
                if delay > 0.0:
                    await asyncio.sleep(delay)
                if resolved is None:
                    raise ApiError("NOT_FOUND", "Method not found.")
                route = resolved.route
                query = request.query
                route.authenticate(state, request.headers, query, time.time())
                call = Call(
                    resolved.params,
                    query,
                    request.headers,
                    b"",
                    wants_int_enums(query),
                    time.time(),
                    f"{request.scheme}://{request.host}",
                )
                try:
                    if route.reads_body:
                        call = replace(call, body=await read_body(request))
                finally:
                    # A request that arrived counts, even if its sender died before its body was read (then
                    # it counts without what the body would have said, such as a create's labels).
                    if route.count is not None:
                        route.count(state, call)
                if route.faults:
                    fault = state.faults.draw()
                    if fault is not None:
                        state.stats.faults[fault] += 1
                        if fault == "drop":
                            outcome = "drop"
                            return drop_connection(request)
                        if fault in PRE_FAULTS:
                            raise injected_error(fault, state.settings.retry_delay)
                    wait = state.limiter.admit(time.time())
                    if wait is not None:
                        raise rate_limited(wait, state.limiter.limit or 0)
                answer = route.handler(state, call)
                response = answer if isinstance(answer, web.Response) else json_response(answer)
            except ApiError as error:
                response = json_response(render_error(error), error.http_code, error.headers)
            except ConnectionError:
                # The client went away while its body was being read (it was killed, say): not our bug, and
                # nothing took effect. The outcome stays "cancelled".
                return drop_connection(request)
            except Exception:
                # A bug in the emulator: still answer in Google's shape, and say what happened in the log.
                _log.exception("emulator_request_failed", method=method, path=path, route=route_name)
                internal = ApiError("INTERNAL", "Internal error encountered.")
                response = json_response(render_error(internal), internal.http_code)
            # The request has taken effect (or failed on its own); a post-fault loses its answer either way.
            if fault == "drop-after":
                outcome = "drop"
                return drop_connection(request)
            if fault == "503-after":
                lost = injected_error("503", state.settings.retry_delay)
                response = json_response(render_error(lost), lost.http_code, lost.headers)
            outcome = str(response.status)
            return response
        finally:
            state.stats.record(method, route_name, outcome)
            if state.log_requests:
                _log.info(
                    "request",
                    method=method,
                    path=path,
                    route=route_name,
                    status=outcome,
                    fault=fault,
                    duration_ms=round((time.perf_counter() - started) * 1000.0, 3),
                )


def create_app(state: EmulatorState) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    surfaces: list[Surface] = [
        GeminiSurface(),
        VertexTuningSurface(),
        VertexServingSurface(),
        StorageSurface(),
        OAuthSurface(),
    ]
    app.router.add_route("*", "/{path:.*}", Dispatcher(state, surfaces).handle)
    return app
