"""Vertex AI's serving side of a tuned model: its endpoint, its model, the operations that remove them, and
the experiment context a tuning job names. Path templates, route names and handlers.

Every path is `/{v1|v1beta1}/projects/P/locations/L/...`; the tuning-jobs surface has `.../tuningJobs` and
this one everything else it knows: `endpoints`, `models`, `operations`, `metadataStores/default/contexts`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tunekeeper.emulator.errors import ApiError, invalid_argument
from tunekeeper.emulator.jsonbody import parse_body
from tunekeeper.emulator.oauth.tokens import require_bearer
from tunekeeper.emulator.routing import Call, Handler, Resolved, Route
from tunekeeper.emulator.vertex.generation import json_array_body, sse_body, stream_chunks, vertex_response
from tunekeeper.emulator.vertex.operations import DELETE, UNDEPLOY
from tunekeeper.emulator.vertex.render_serving import context_json, endpoint_json, model_json, operation_json

if TYPE_CHECKING:
    from tunekeeper.emulator.state import EmulatorState

# The experiments tuning jobs name (`metadataStores/default/contexts/tuning-experiment-...`).
EXPERIMENT_PREFIX = "tuning-experiment-"
_JSON_CONTENT_TYPE = "application/json; charset=UTF-8"


def _location(call: Call) -> str:
    return call.params["location"]


def _endpoint_name(call: Call) -> str:
    return f"{_location(call)}/endpoints/{call.params['endpoint']}"


def _model_name(call: Call) -> str:
    return f"{_location(call)}/models/{call.params['model']}"


def _answer(state: EmulatorState, call: Call) -> dict[str, Any]:
    """The full answer of the endpoint's deployed model to the request's body."""
    body = parse_body(call.body)
    endpoint = state.deployments.endpoint(_endpoint_name(call))
    model = endpoint.model
    if model is None:
        raise ApiError(
            "FAILED_PRECONDITION",
            f"Endpoint `{endpoint.name}` has no deployed model: deploy a model to it before sending requests.",
        )
    answer = vertex_response(
        model.examples, model.base_model, body, call.int_enums, call.now, state.deployments.new_response_id()
    )
    endpoint.generate_calls += 1
    return answer


def generate_content(state: EmulatorState, call: Call) -> dict[str, Any]:
    return _answer(state, call)


def stream_generate_content(state: EmulatorState, call: Call) -> web.Response:
    chunks = stream_chunks(_answer(state, call))
    if call.query.get("alt") == "sse" or call.query.get("$alt") == "sse":
        return web.Response(body=sse_body(chunks), headers={"Content-Type": "text/event-stream"})
    return web.Response(body=json_array_body(chunks), headers={"Content-Type": _JSON_CONTENT_TYPE})


def get_endpoint(state: EmulatorState, call: Call) -> dict[str, Any]:
    return endpoint_json(state.deployments.endpoint(_endpoint_name(call)))


def undeploy_model(state: EmulatorState, call: Call) -> dict[str, Any]:
    body = parse_body(call.body)
    deployed_model_id = body.get("deployedModelId")
    if not isinstance(deployed_model_id, str) or not deployed_model_id:
        raise invalid_argument("Required field is not set: deployed_model_id.", "deployed_model_id")
    name = _endpoint_name(call)
    state.deployments.undeploy(name, deployed_model_id, call.now)
    operation = state.deployments.operations.record(name, UNDEPLOY, call.now)
    return operation_json(operation, call.params["version"])


def delete_endpoint(state: EmulatorState, call: Call) -> dict[str, Any]:
    state.deployments.delete_endpoint(_endpoint_name(call))
    operation = state.deployments.operations.record(_location(call), DELETE, call.now)
    return operation_json(operation, call.params["version"])


def get_model(state: EmulatorState, call: Call) -> dict[str, Any]:
    return model_json(state.deployments.model(_model_name(call)))


def delete_model(state: EmulatorState, call: Call) -> dict[str, Any]:
    state.deployments.delete_model(_model_name(call))
    operation = state.deployments.operations.record(_location(call), DELETE, call.now)
    return operation_json(operation, call.params["version"])


def get_operation(state: EmulatorState, call: Call) -> dict[str, Any]:
    operation = state.deployments.operations.get(f"{call.params['parent']}/operations/{call.params['operation']}")
    return operation_json(operation, call.params["version"])


def get_context(state: EmulatorState, call: Call) -> dict[str, Any]:
    context_id = call.params["context"]
    name = f"{_location(call)}/metadataStores/default/contexts/{context_id}"
    if not context_id.startswith(EXPERIMENT_PREFIX):
        raise ApiError("NOT_FOUND", f"Context {name} not found.")
    # Experiments are not stored: any tuning experiment exists, made when the emulator started.
    return context_json(name, context_id, state.started_at)


def _route(name: str, handler: Handler, reads_body: bool = False) -> Route:
    return Route(name, handler, require_bearer, reads_body=reads_body)


# (kind of path, verb after ":", HTTP method) -> route. Every route is served under both versions.
ROUTES: dict[tuple[str, str, str], Route] = {
    ("endpoint", "generateContent", "POST"): _route("endpoints.generateContent", generate_content, True),
    ("endpoint", "streamGenerateContent", "POST"): _route(
        "endpoints.streamGenerateContent", stream_generate_content, True
    ),
    ("endpoint", "", "GET"): _route("endpoints.get", get_endpoint),
    ("endpoint", "undeployModel", "POST"): _route("endpoints.undeployModel", undeploy_model, True),
    ("endpoint", "", "DELETE"): _route("endpoints.delete", delete_endpoint),
    ("model", "", "GET"): _route("models.get", get_model),
    ("model", "", "DELETE"): _route("models.delete", delete_model),
    ("operation", "", "GET"): _route("operations.get", get_operation),
    ("endpoint-operation", "", "GET"): _route("endpoints.operations.get", get_operation),
    ("model-operation", "", "GET"): _route("models.operations.get", get_operation),
    ("context", "", "GET"): _route("metadataStores.contexts.get", get_context),
}

_SEGMENT = r"[^/:]+"
_PATH = re.compile(
    rf"^/(?P<version>v1|v1beta1)/(?P<location>projects/{_SEGMENT}/locations/{_SEGMENT})/(?:"
    rf"endpoints/(?P<endpoint>{_SEGMENT})(?:/operations/(?P<endpoint_operation>{_SEGMENT}))?"
    rf"|models/(?P<model>{_SEGMENT})(?:/operations/(?P<model_operation>{_SEGMENT}))?"
    rf"|operations/(?P<operation>{_SEGMENT})"
    rf"|metadataStores/default/contexts/(?P<context>{_SEGMENT})"
    r")(?::(?P<verb>[A-Za-z]+))?$"
)


class VertexServingSurface:
    """`/v1/projects/P/locations/L/{endpoints,models,operations,metadataStores}/...` (and `/v1beta1/`)."""

    def resolve(self, method: str, path: str, raw_path: str) -> Resolved | None:
        match = _PATH.match(path)
        if match is None:
            return None
        location = match["location"]
        params = {"version": match["version"], "location": location}
        if match["endpoint_operation"]:
            kind = "endpoint-operation"
            params["parent"] = f"{location}/endpoints/{match['endpoint']}"
            params["operation"] = match["endpoint_operation"]
        elif match["endpoint"]:
            kind = "endpoint"
            params["endpoint"] = match["endpoint"]
        elif match["model_operation"]:
            kind = "model-operation"
            params["parent"] = f"{location}/models/{match['model']}"
            params["operation"] = match["model_operation"]
        elif match["model"]:
            kind = "model"
            params["model"] = match["model"]
        elif match["operation"]:
            kind = "operation"
            params["parent"] = location
            params["operation"] = match["operation"]
        else:
            kind = "context"
            params["context"] = match["context"]
        route = ROUTES.get((kind, match["verb"] or "", method))
        return Resolved(route, params) if route is not None else None
