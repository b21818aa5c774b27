"""Every error path answers Google's shape, `{"error": {"code", "message", "status", "details"?}}`, with the
HTTP code that belongs to the status."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.emulator.conftest import KEY_HEADERS, call, create, make_config, model_body, wait_done
from tunekeeper.emulator import Emulator

HTTP_BY_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
}


@dataclass
class World:
    emulator: Emulator
    ready: str  # tunedModels/... ACTIVE
    busy: str  # CREATING for an hour
    broken: str  # FAILED (cancelled)
    busy_operation: str


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with Emulator(make_config()) as emu, aiohttp.ClientSession(headers=KEY_HEADERS) as session:
        ready = await create(session, emu, model_body("ready"), "ready")
        await wait_done(session, emu, ready["name"])
        emu.configure(step_seconds=3600.0)
        busy = await create(session, emu, model_body("busy"), "busy")
        broken = await create(session, emu, model_body("broken"), "broken")
        status, _ = await call(session, "POST", f"{emu.base_url}/v1/{broken['name']}:cancel", {})
        assert status == 200
        yield World(emu, "tunedModels/ready", "tunedModels/busy", "tunedModels/broken", busy["name"])


def body_with(path: str, value: Any) -> dict[str, Any]:
    """model_body() with one field (dotted path) set; `...` deletes it."""
    body = copy.deepcopy(model_body())
    *parents, last = path.split(".")
    target = body
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return body


def examples(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"examples": [{"textInput": text, "output": output} for text, output in pairs]}


@dataclass
class Case:
    method: str
    path: str  # {ready}, {busy}, {broken}, {busy_op} are filled in
    expected_status: str
    message: str  # a part of the message
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] | None = None  # None: the API key header


CREATE = "/v1beta/tunedModels"
CASES = {
    "display name too long": Case("POST", CREATE, "INVALID_ARGUMENT", "at most 40", body_with("displayName", "x" * 41)),
    "id with capitals": Case(
        "POST", CREATE, "INVALID_ARGUMENT", "tuned_model_id", model_body(), {"tunedModelId": "Bad_Id"}
    ),
    "id ending in a hyphen": Case(
        "POST", CREATE, "INVALID_ARGUMENT", "tuned_model_id", model_body(), {"tunedModelId": "abc-"}
    ),
    "id too long": Case("POST", CREATE, "INVALID_ARGUMENT", "tuned_model_id", model_body(), {"tunedModelId": "a" * 41}),
    "no examples": Case(
        "POST", CREATE, "INVALID_ARGUMENT", "must not be empty", body_with("tuningTask.trainingData.examples", {})
    ),
    "no training data": Case(
        "POST", CREATE, "INVALID_ARGUMENT", "Training data is required", body_with("tuningTask.trainingData", ...)
    ),
    "input too long": Case(
        "POST",
        CREATE,
        "INVALID_ARGUMENT",
        "more than the 40000",
        body_with("tuningTask.trainingData.examples", examples(("x" * 40_001, "y"))),
    ),
    "output too long": Case(
        "POST",
        CREATE,
        "INVALID_ARGUMENT",
        "more than the 5000",
        body_with("tuningTask.trainingData.examples", examples(("x", "y" * 5_001))),
    ),
    "missing output": Case(
        "POST",
        CREATE,
        "INVALID_ARGUMENT",
        "output is required",
        body_with("tuningTask.trainingData.examples", {"examples": [{"textInput": "x"}]}),
    ),
    "learning rate and multiplier": Case(
        "POST",
        CREATE,
        "INVALID_ARGUMENT",
        "Only one of learning_rate and learning_rate_multiplier",
        body_with("tuningTask.hyperparameters.learningRateMultiplier", 1.0),
    ),
    "negative epoch count": Case(
        "POST", CREATE, "INVALID_ARGUMENT", "must be positive", body_with("tuningTask.hyperparameters.epochCount", -1)
    ),
    "epoch count not a number": Case(
        "POST", CREATE, "INVALID_ARGUMENT", "TYPE_INT32", body_with("tuningTask.hyperparameters.epochCount", "five")
    ),
    "unknown base model": Case(
        "POST", CREATE, "INVALID_ARGUMENT", "not available for tuning", body_with("baseModel", "models/gemini-pro")
    ),
    "no source model": Case(
        "POST", CREATE, "INVALID_ARGUMENT", "source model is required", body_with("baseModel", ...)
    ),
    "unknown field": Case(
        "POST", CREATE, "INVALID_ARGUMENT", 'Unknown name "epochs"', body_with("tuningTask.hyperparameters.epochs", 3)
    ),
    "source model missing": Case(
        "POST",
        CREATE,
        "NOT_FOUND",
        "Tuned model tunedModels/nowhere does not exist.",
        {**body_with("baseModel", ...), "tunedModelSource": {"tunedModel": "tunedModels/nowhere"}},
    ),
    "source model still tuning": Case(
        "POST",
        CREATE,
        "FAILED_PRECONDITION",
        "only ACTIVE",
        {**body_with("baseModel", ...), "tunedModelSource": {"tunedModel": "tunedModels/busy"}},
    ),
    "id in use": Case("POST", CREATE, "ALREADY_EXISTS", "already exists", model_body(), {"tunedModelId": "busy"}),
    "malformed json": Case("POST", CREATE, "INVALID_ARGUMENT", "Invalid JSON payload", b'{"displayName": "x"'),
    "json not an object": Case("POST", CREATE, "INVALID_ARGUMENT", "Invalid JSON payload", b"[1, 2]"),
    "both spellings of a field": Case(
        "POST", CREATE, "INVALID_ARGUMENT", "Duplicate field", b'{"display_name": "a", "displayName": "b"}'
    ),
    "get missing": Case("GET", "/v1beta/tunedModels/x", "NOT_FOUND", "Tuned model tunedModels/x does not exist."),
    "get missing v1": Case("GET", "/v1/tunedModels/x", "NOT_FOUND", "Tuned model tunedModels/x does not exist."),
    "patch missing": Case(
        "PATCH",
        "/v1beta/tunedModels/x",
        "NOT_FOUND",
        "does not exist",
        {"description": "d"},
        {"updateMask": "description"},
    ),
    "patch immutable field": Case(
        "PATCH",
        "/v1beta/{ready}",
        "INVALID_ARGUMENT",
        "Invalid update mask",
        {"baseModel": "m"},
        {"updateMask": "base_model"},
    ),
    "patch display name too long": Case(
        "PATCH",
        "/v1beta/{ready}",
        "INVALID_ARGUMENT",
        "at most 40",
        {"displayName": "x" * 41},
        {"updateMask": "displayName"},
    ),
    "delete missing": Case("DELETE", "/v1beta/tunedModels/x", "NOT_FOUND", "Tuned model tunedModels/x does not exist."),
    "operation of missing model": Case("GET", "/v1/tunedModels/x/operations/y", "NOT_FOUND", "does not exist"),
    "operation id wrong": Case("GET", "/v1beta/{busy}/operations/nope", "NOT_FOUND", "operations/nope does not exist"),
    "cancel missing": Case("POST", "/v1/tunedModels/x/operations/y:cancel", "NOT_FOUND", "does not exist", {}),
    "operations of missing model": Case("GET", "/v1/tunedModels/x/operations", "NOT_FOUND", "does not exist"),
    "operations bad filter": Case(
        "GET", "/v1/{busy}/operations", "INVALID_ARGUMENT", "Invalid filter", params={"filter": "name=x"}
    ),
    "generate while tuning": Case(
        "POST",
        "/v1beta/{busy}:generateContent",
        "FAILED_PRECONDITION",
        "CREATING",
        {"contents": [{"parts": [{"text": "1"}]}]},
    ),
    "generate on failed model": Case(
        "POST",
        "/v1beta/{broken}:generateContent",
        "FAILED_PRECONDITION",
        "FAILED",
        {"contents": [{"parts": [{"text": "1"}]}]},
    ),
    "generate without contents": Case(
        "POST", "/v1beta/{ready}:generateContent", "INVALID_ARGUMENT", "contents is not specified", {}
    ),
    "generate in json mode": Case(
        "POST",
        "/v1/{ready}:generateContent",
        "INVALID_ARGUMENT",
        "JSON mode",
        {"contents": [{"parts": [{"text": "1"}]}], "generationConfig": {"responseMimeType": "application/json"}},
    ),
    "generate on missing model": Case(
        "POST",
        "/v1beta/tunedModels/x:generateContent",
        "NOT_FOUND",
        "does not exist",
        {"contents": [{"parts": [{"text": "1"}]}]},
    ),
    "negative page size": Case("GET", CREATE, "INVALID_ARGUMENT", "page_size", params={"pageSize": "-1"}),
    "garbage page token": Case("GET", CREATE, "INVALID_ARGUMENT", "page_token", params={"pageToken": "!!!"}),
    "unsupported filter": Case("GET", CREATE, "INVALID_ARGUMENT", "Invalid filter", params={"filter": "state:ACTIVE"}),
    "unknown path": Case("GET", "/v1beta/models", "NOT_FOUND", "Method not found."),
    "patch under v1": Case("PATCH", "/v1/{ready}", "NOT_FOUND", "Method not found.", {"description": "d"}),
    "create under v1": Case("POST", "/v1/tunedModels", "NOT_FOUND", "Method not found.", model_body()),
    "no credential": Case("GET", CREATE, "UNAUTHENTICATED", "unregistered callers", headers={}),
    "bearer token without project": Case(
        "GET", CREATE, "PERMISSION_DENIED", "quota project", headers={"Authorization": "Bearer t0ken"}
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_error_shape(world: World, case: Case) -> None:
    path = case.path.format(ready=world.ready, busy=world.busy, broken=world.broken, busy_op=world.busy_operation)
    headers = KEY_HEADERS if case.headers is None else case.headers
    async with aiohttp.ClientSession() as session:
        status, answer = await call(
            session, case.method, world.emulator.base_url + path, case.body, params=case.params, headers=headers
        )
    assert set(answer) == {"error"}
    error = answer["error"]
    assert set(error) <= {"code", "message", "status", "details"}
    assert error["status"] == case.expected_status, error
    assert error["code"] == status == HTTP_BY_STATUS[case.expected_status]
    assert case.message in error["message"]
    for detail in error.get("details", []):
        assert detail["@type"].startswith("type.googleapis.com/google.rpc.")


async def test_credentials_accepted_in_every_form(world: World) -> None:
    url = f"{world.emulator.base_url}/v1beta/tunedModels"
    forms: list[tuple[dict[str, str], dict[str, str]]] = [
        ({"x-goog-api-key": "k"}, {}),
        ({}, {"key": "k"}),
        ({"Authorization": "Bearer token", "x-goog-user-project": "my-project"}, {}),
    ]
    async with aiohttp.ClientSession() as session:
        for headers, params in forms:
            status, answer = await call(session, "GET", url, headers=headers, params=params)
            assert status == 200, (headers, params, answer)


async def test_configured_keys_reject_others() -> None:
    async with (
        Emulator(make_config(api_keys=frozenset({"good-key"}))) as emu,
        aiohttp.ClientSession() as session,
    ):
        url = f"{emu.base_url}/v1beta/tunedModels"
        status, _ = await call(session, "GET", url, headers={"x-goog-api-key": "good-key"})
        assert status == 200
        status, answer = await call(session, "GET", url, headers={"x-goog-api-key": "bad-key"})
        assert (status, answer["error"]["status"]) == (403, "PERMISSION_DENIED")
        assert answer["error"]["details"][0]["reason"] == "API_KEY_INVALID"
        status, answer = await call(session, "GET", url, params={"key": "bad-key"})
        assert (status, answer["error"]["status"]) == (403, "PERMISSION_DENIED")
        status, answer = await call(
            session, "GET", url, headers={"Authorization": "Bearer bad", "x-goog-user-project": "p"}
        )
        assert (status, answer["error"]["status"]) == (401, "UNAUTHENTICATED")
        status, answer = await call(session, "GET", url)
        assert (status, answer["error"]["status"]) == (401, "UNAUTHENTICATED")
