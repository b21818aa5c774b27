"""The API's methods: path templates, route names and handlers.

Handlers are plain functions of the emulator state and one parsed call; they return the JSON body of a 200
answer or raise ApiError. Routing is one regular expression, cheap on the hot path (operation GET).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tunekeeper.emulator.errors import ApiError
from tunekeeper.emulator.generate import generate_response
from tunekeeper.emulator.jsonbody import parse_body
from tunekeeper.emulator.models import ACTIVE, CREATING
from tunekeeper.emulator.pagination import model_filter, operation_filter, page_size, paginate
from tunekeeper.emulator.render import model_json, operation_json
from tunekeeper.emulator.state import EmulatorState
from tunekeeper.emulator.validation import parse_create, parse_patch


@dataclass(slots=True)
class Call:
    model_id: str
    operation_id: str
    query: Mapping[str, str]
    body: bytes
    int_enums: bool
    now: float


Handler = Callable[[EmulatorState, Call], dict[str, Any]]


def create_model(state: EmulatorState, call: Call) -> dict[str, Any]:
    tuned_model_id = call.query.get("tunedModelId", call.query.get("tuned_model_id"))
    request = parse_create(parse_body(call.body), tuned_model_id)
    model = state.store.create(request, call.now, state.tuning_options())
    state.stats.create_accepted(model.id, named=tuned_model_id is not None)
    return operation_json(model, call.now, call.int_enums)


def _query(call: Call, camel: str, snake: str) -> str | None:
    return call.query.get(camel, call.query.get(snake))


def list_models(state: EmulatorState, call: Call) -> dict[str, Any]:
    size = page_size(_query(call, "pageSize", "page_size"))
    filter_text = call.query.get("filter")
    keep = model_filter(filter_text)
    store = state.store
    page = paginate(
        store.all(),
        keep,
        size,
        _query(call, "pageToken", "page_token"),
        ("tunedModels", str(size), filter_text or ""),
    )
    body: dict[str, Any] = {}
    if page.models:
        rendered = []
        for model in page.models:
            store.settle(model, call.now)
            rendered.append(model_json(model, call.now, call.int_enums))
        body["tunedModels"] = rendered
    if page.next_token:
        body["nextPageToken"] = page.next_token
    return body


def get_model(state: EmulatorState, call: Call) -> dict[str, Any]:
    return model_json(state.store.get(call.model_id, call.now), call.now, call.int_enums)


def patch_model(state: EmulatorState, call: Call) -> dict[str, Any]:
    patch = parse_patch(parse_body(call.body), _query(call, "updateMask", "update_mask"))
    model = state.store.patch(call.model_id, patch, call.now)
    return model_json(model, call.now, call.int_enums)


def delete_model(state: EmulatorState, call: Call) -> dict[str, Any]:
    state.store.delete(call.model_id, call.now)
    return {}


def generate_content(state: EmulatorState, call: Call) -> dict[str, Any]:
    body = parse_body(call.body)
    model = state.store.get(call.model_id, call.now)
    if model.state == CREATING:
        raise ApiError(
            "FAILED_PRECONDITION",
            f"Tuned model {model.name} is not ready yet: it is still tuning (state CREATING).",
        )
    if model.state != ACTIVE:
        raise ApiError(
            "FAILED_PRECONDITION", f"Tuned model {model.name} is in state {model.state} and cannot serve requests."
        )
    return generate_response(model.examples, body, call.int_enums)


def get_operation(state: EmulatorState, call: Call) -> dict[str, Any]:
    model = state.store.get_operation(call.model_id, call.operation_id, call.now)
    return operation_json(model, call.now, call.int_enums)


def list_operations(state: EmulatorState, call: Call) -> dict[str, Any]:
    model = state.store.get(call.model_id, call.now)
    size = page_size(_query(call, "pageSize", "page_size"))
    filter_text = call.query.get("filter")
    page = paginate(
        [model],
        operation_filter(filter_text),
        size,
        _query(call, "pageToken", "page_token"),
        ("operations", model.id, str(size), filter_text or ""),
    )
    body: dict[str, Any] = {}
    if page.models:
        body["operations"] = [operation_json(item, call.now, call.int_enums) for item in page.models]
    if page.next_token:
        body["nextPageToken"] = page.next_token
    return body


def cancel_operation(state: EmulatorState, call: Call) -> dict[str, Any]:
    parse_body(call.body)  # `{}` by the API's definition; anything else must at least be valid JSON
    state.store.cancel(call.model_id, call.operation_id, call.now)
    return {}


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # method name as in Google's API reference, e.g. "tunedModels.operations.get"
    handler: Handler
    reads_body: bool


# (kind of path, verb after ":", HTTP method) -> route, and the API versions that serve it.
_BOTH = frozenset({"v1", "v1beta"})
_V1BETA = frozenset({"v1beta"})
ROUTES: dict[tuple[str, str, str], tuple[Route, frozenset[str]]] = {
    ("collection", "", "POST"): (Route("tunedModels.create", create_model, True), _V1BETA),
    ("collection", "", "GET"): (Route("tunedModels.list", list_models, False), _BOTH),
    ("model", "", "GET"): (Route("tunedModels.get", get_model, False), _BOTH),
    ("model", "", "PATCH"): (Route("tunedModels.patch", patch_model, True), _V1BETA),
    ("model", "", "DELETE"): (Route("tunedModels.delete", delete_model, False), _V1BETA),
    ("model", "generateContent", "POST"): (Route("tunedModels.generateContent", generate_content, True), _BOTH),
    ("operations", "", "GET"): (Route("tunedModels.operations.list", list_operations, False), _BOTH),
    ("operation", "", "GET"): (Route("tunedModels.operations.get", get_operation, False), _BOTH),
    ("operation", "cancel", "POST"): (Route("tunedModels.operations.cancel", cancel_operation, True), _BOTH),
}

_PATH = re.compile(
    r"^/(?P<version>v1beta|v1)/tunedModels"
    r"(?:/(?P<model>[^/:]+)(?:(?P<operations>/operations)(?:/(?P<operation>[^/:]+))?)?)?"
    r"(?::(?P<verb>[A-Za-z]+))?$"
)


def resolve(method: str, path: str) -> tuple[Route, str, str] | None:
    """(route, model id, operation id) for an API path, or None when no method of the API matches."""
    match = _PATH.match(path)
    if match is None:
        return None
    model_id = match["model"] or ""
    operation_id = match["operation"] or ""
    if operation_id:
        kind = "operation"
    elif match["operations"]:
        kind = "operations"
    elif model_id:
        kind = "model"
    else:
        kind = "collection"
    entry = ROUTES.get((kind, match["verb"] or "", method))
    if entry is None or match["version"] not in entry[1]:
        return None
    return entry[0], model_id, operation_id
