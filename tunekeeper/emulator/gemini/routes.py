"""The Gemini API's tuned-model methods: path templates, route names and handlers.

Routing is one regular expression, cheap on the hot path (operation GET).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tunekeeper.emulator.errors import ApiError
from tunekeeper.emulator.gemini.auth import authenticate
from tunekeeper.emulator.gemini.filters import model_filter, operation_filter
from tunekeeper.emulator.gemini.models import ACTIVE, CREATING
from tunekeeper.emulator.gemini.render import model_json, operation_json
from tunekeeper.emulator.gemini.validation import MAX_INPUT_CHARS, parse_create, parse_patch
from tunekeeper.emulator.generate import generate_response
from tunekeeper.emulator.jsonbody import parse_body
from tunekeeper.emulator.pages import page_size, paginate
from tunekeeper.emulator.routing import Call, Counter, Handler, Resolved, Route

if TYPE_CHECKING:
    from tunekeeper.emulator.state import EmulatorState


def _model_id(call: Call) -> str:
    return call.params["model"]


def create_model(state: EmulatorState, call: Call) -> dict[str, Any]:
    tuned_model_id = call.query_value("tunedModelId", "tuned_model_id")
    request = parse_create(parse_body(call.body), tuned_model_id)
    model = state.store.create(request, call.now, state.tuning_options())
    state.stats.create_accepted(model.id, named=tuned_model_id is not None)
    return operation_json(model, call.now, call.int_enums)


def list_models(state: EmulatorState, call: Call) -> dict[str, Any]:
    size = page_size(call.query_value("pageSize", "page_size"))
    filter_text = call.query.get("filter")
    keep = model_filter(filter_text)
    store = state.store
    page = paginate(
        store.all(),
        keep,
        size,
        call.query_value("pageToken", "page_token"),
        ("tunedModels", str(size), filter_text or ""),
    )
    body: dict[str, Any] = {}
    if page.items:
        rendered = []
        for model in page.items:
            store.settle(model, call.now)
            rendered.append(model_json(model, call.now, call.int_enums))
        body["tunedModels"] = rendered
    if page.next_token:
        body["nextPageToken"] = page.next_token
    return body


def get_model(state: EmulatorState, call: Call) -> dict[str, Any]:
    return model_json(state.store.get(_model_id(call), call.now), call.now, call.int_enums)


def patch_model(state: EmulatorState, call: Call) -> dict[str, Any]:
    patch = parse_patch(parse_body(call.body), call.query_value("updateMask", "update_mask"))
    model = state.store.patch(_model_id(call), patch, call.now)
    return model_json(model, call.now, call.int_enums)


def delete_model(state: EmulatorState, call: Call) -> dict[str, Any]:
    state.store.delete(_model_id(call), call.now)
    return {}


def generate_content(state: EmulatorState, call: Call) -> dict[str, Any]:
    body = parse_body(call.body)
    model = state.store.get(_model_id(call), call.now)
    if model.state == CREATING:
        raise ApiError(
            "FAILED_PRECONDITION",
            f"Tuned model {model.name} is not ready yet: it is still tuning (state CREATING).",
        )
    if model.state != ACTIVE:
        raise ApiError(
            "FAILED_PRECONDITION", f"Tuned model {model.name} is in state {model.state} and cannot serve requests."
        )
    answer = generate_response(model.examples, body, call.int_enums, MAX_INPUT_CHARS)
    for part in answer["candidates"][0]["content"]["parts"]:
        part["text"] = state.with_nul(part["text"])  # a model's output may hold any character
    return answer


def get_operation(state: EmulatorState, call: Call) -> dict[str, Any]:
    model = state.store.get_operation(_model_id(call), call.params["operation"], call.now)
    return operation_json(model, call.now, call.int_enums)


def list_operations(state: EmulatorState, call: Call) -> dict[str, Any]:
    model = state.store.get(_model_id(call), call.now)
    size = page_size(call.query_value("pageSize", "page_size"))
    filter_text = call.query.get("filter")
    page = paginate(
        [model],
        operation_filter(filter_text),
        size,
        call.query_value("pageToken", "page_token"),
        ("operations", model.id, str(size), filter_text or ""),
    )
    body: dict[str, Any] = {}
    if page.items:
        body["operations"] = [operation_json(item, call.now, call.int_enums) for item in page.items]
    if page.next_token:
        body["nextPageToken"] = page.next_token
    return body


def cancel_operation(state: EmulatorState, call: Call) -> dict[str, Any]:
    parse_body(call.body)  # `{}` by the API's definition; anything else must at least be valid JSON
    state.store.cancel(_model_id(call), call.params["operation"], call.now)
    return {}


def _count_operation_get(state: EmulatorState, call: Call) -> None:
    state.stats.operation_gets[call.params["model"]] += 1


def _count_create(state: EmulatorState, call: Call) -> None:
    state.stats.create_attempted(call.query_value("tunedModelId", "tuned_model_id"))


def _route(name: str, handler: Handler, reads_body: bool = False, count: Counter | None = None) -> Route:
    return Route(name, handler, authenticate, reads_body=reads_body, count=count)


# (kind of path, verb after ":", HTTP method) -> route, and the API versions that serve it.
_BOTH = frozenset({"v1", "v1beta"})
_V1BETA = frozenset({"v1beta"})
ROUTES: dict[tuple[str, str, str], tuple[Route, frozenset[str]]] = {
    ("collection", "", "POST"): (_route("tunedModels.create", create_model, True, _count_create), _V1BETA),
    ("collection", "", "GET"): (_route("tunedModels.list", list_models), _BOTH),
    ("model", "", "GET"): (_route("tunedModels.get", get_model), _BOTH),
    ("model", "", "PATCH"): (_route("tunedModels.patch", patch_model, True), _V1BETA),
    ("model", "", "DELETE"): (_route("tunedModels.delete", delete_model), _V1BETA),
    ("model", "generateContent", "POST"): (_route("tunedModels.generateContent", generate_content, True), _BOTH),
    ("operations", "", "GET"): (_route("tunedModels.operations.list", list_operations), _BOTH),
    ("operation", "", "GET"): (_route("tunedModels.operations.get", get_operation, count=_count_operation_get), _BOTH),
    ("operation", "cancel", "POST"): (_route("tunedModels.operations.cancel", cancel_operation, True), _BOTH),
}

_PATH = re.compile(
    r"^/(?P<version>v1beta|v1)/tunedModels"
    r"(?:/(?P<model>[^/:]+)(?:(?P<operations>/operations)(?:/(?P<operation>[^/:]+))?)?)?"
    r"(?::(?P<verb>[A-Za-z]+))?$"
)


class GeminiSurface:
    """`/v1beta/tunedModels/...` and `/v1/tunedModels/...`."""

    def resolve(self, method: str, path: str, raw_path: str) -> Resolved | None:
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
        return Resolved(entry[0], {"model": model_id, "operation": operation_id})
