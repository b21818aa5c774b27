"""What every surface of the emulator shares: a route, the call a handler gets, and how a path finds its route.

A surface is one Google service the emulator stands in for (the Gemini API's tuned models, Vertex AI, Cloud
Storage, the OAuth token endpoint). Each lists its routes in a `Surface`; the dispatcher (app.py) asks the
surfaces in turn which route a request is for, then applies the machinery they all share: added latency, the
route's authentication, the fault draw, the request limit, the handler, and a post-fault.

Handlers are plain functions of the emulator state and one call. They return the JSON body of a 200 answer, or
an `aiohttp.web.Response` when the answer is not JSON (a download, a stream, a redirect to an upload session),
or raise `ApiError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from multidict import CIMultiDictProxy

from tunekeeper.emulator.errors import ApiError

if TYPE_CHECKING:
    from tunekeeper.emulator.state import EmulatorState


@dataclass(frozen=True, slots=True)
class Call:
    """One request, as a handler sees it."""

    params: Mapping[str, str]  # the path's parameters by name (decoded), e.g. {"model": "x", "operation": "y"}
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes  # empty unless the route reads its body
    int_enums: bool  # `$alt=json;enum-encoding=int`: enums are sent and answered as numbers
    now: float  # the request's time, for everything it reads or changes
    base_url: str  # `http://host:port` as the client reached this server (for URLs handed back to it)

    def query_value(self, camel: str, snake: str) -> str | None:
        """A query parameter that Google accepts in either spelling (`pageSize` or `page_size`)."""
        return self.query.get(camel, self.query.get(snake))


Answer = dict[str, Any] | web.Response
Handler = Callable[["EmulatorState", Call], Answer]
# Checks a request's credentials (raising ApiError); runs before the fault draw, as authentication does at Google.
Authenticator = Callable[["EmulatorState", CIMultiDictProxy[str], Mapping[str, str], float], None]
# Counts a request that passed authentication, before the fault draw decides its fate (creates attempted, ...).
Counter = Callable[["EmulatorState", Call], None]
# The JSON body of an error answer. Most of Google answers `{"error": {"code", "message", "status"}}`; Cloud
# Storage's JSON API has its own shape (`errors[]` with a `reason`), so a route may render errors its way.
ErrorRenderer = Callable[[ApiError], dict[str, Any]]


def google_error_body(error: ApiError) -> dict[str, Any]:
    return error.body()


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # the method's name as in Google's reference, e.g. "tunedModels.operations.get"; stats and logs use it
    handler: Handler
    authenticate: Authenticator
    reads_body: bool = False
    faults: bool = True  # False: injected faults and the request limit never apply (the token endpoint)
    count: Counter | None = None
    render_error: ErrorRenderer = google_error_body


@dataclass(frozen=True, slots=True)
class Resolved:
    route: Route
    params: Mapping[str, str]


class Surface(Protocol):
    """One service's paths. `resolve` gets the decoded path and the raw one (Cloud Storage object names may hold
    an encoded `/`); it answers None when the path is not this surface's."""

    def resolve(self, method: str, path: str, raw_path: str) -> Resolved | None: ...
