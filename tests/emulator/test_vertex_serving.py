"""Vertex AI's tuned endpoints and models over raw HTTP: generate and stream, get, undeploy, delete, operations."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.emulator.conftest import call, ok
from tunekeeper.emulator import Emulator
from tunekeeper.emulator.oauth.tokens import CLOUD_PLATFORM_SCOPE
from tunekeeper.emulator.vertex.deployments import EndpointResource, TunedModelResource
from tunekeeper.emulator.vertex.serving import VertexServingSurface

PARENT = "projects/p/locations/us-central1"
EXAMPLES = (("1", "2"), ("3", "4"), ("hello there", "general kenobi"))
LABELS = {"tunekeeper-job": "42"}


def deploy(emulator: Emulator) -> tuple[TunedModelResource, EndpointResource]:
    return emulator.state.deployments.deploy(
        PARENT, "numbers", "gemini-2.5-flash", EXAMPLES, LABELS, f"{PARENT}/tuningJobs/1", time.time()
    )


@pytest.fixture
async def bearer(emulator: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    """A session that sends a token the emulator issued."""
    token = emulator.state.tokens.issue("sa@example", frozenset({CLOUD_PLATFORM_SCOPE}), time.time())
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token.access_token}"}) as client:
        yield client


def url(emulator: Emulator, name: str, version: str = "v1") -> str:
    return f"{emulator.base_url}/{version}/{name}"


def prompt(text: str) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
async def test_generate_content_answers_the_nearest_example_in_vertex_shape(
    emulator: Emulator, bearer: aiohttp.ClientSession, version: str
) -> None:
    _, endpoint = deploy(emulator)
    answer = await ok(bearer, "POST", url(emulator, endpoint.name, version) + ":generateContent", prompt("3"))
    candidate = answer["candidates"][0]
    assert candidate["content"] == {"parts": [{"text": "4"}], "role": "model"}
    assert candidate["finishReason"] == "STOP"
    assert "safetyRatings" not in candidate and "index" not in candidate
    assert answer["modelVersion"] == "gemini-2.5-flash"
    assert answer["createTime"].endswith("Z")
    assert len(answer["responseId"]) == 23
    usage = answer["usageMetadata"]
    assert usage["trafficType"] == "ON_DEMAND"
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert usage["promptTokensDetails"] == [{"modality": "TEXT", "tokenCount": usage["promptTokenCount"]}]
    again = await ok(bearer, "POST", url(emulator, endpoint.name, version) + ":generateContent", prompt("3"))
    assert again["responseId"] != answer["responseId"]


async def test_int_enums_answer_numbers(emulator: Emulator, bearer: aiohttp.ClientSession) -> None:
    _, endpoint = deploy(emulator)
    answer = await ok(
        bearer,
        "POST",
        url(emulator, endpoint.name) + ":generateContent",
        prompt("1"),
        params={"$alt": "json;enum-encoding=int"},
    )
    assert answer["candidates"][0]["finishReason"] == 1
    assert answer["usageMetadata"]["trafficType"] == 1
    assert answer["usageMetadata"]["candidatesTokensDetails"][0]["modality"] == 1


async def test_stream_as_server_sent_events(emulator: Emulator, bearer: aiohttp.ClientSession) -> None:
    _, endpoint = deploy(emulator)
    async with bearer.post(
        url(emulator, endpoint.name, "v1beta1") + ":streamGenerateContent",
        params={"alt": "sse"},
        json=prompt("hello there"),
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        raw = await response.text()
    events = raw.split("\r\n\r\n")
    assert events[-1] == ""  # every event, the last too, ends with a blank line
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert all(event.startswith("data: {") for event in events[:-1])
    assert len(chunks) == 2
    text = "".join(chunk["candidates"][0]["content"]["parts"][0]["text"] for chunk in chunks)
    assert text == "general kenobi"
    assert "finishReason" not in chunks[0]["candidates"][0] and "usageMetadata" not in chunks[0]
    assert chunks[1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[1]["usageMetadata"]["candidatesTokenCount"] >= 1
    assert len({chunk["responseId"] for chunk in chunks}) == 1


async def test_stream_without_sse_is_a_json_array(emulator: Emulator, bearer: aiohttp.ClientSession) -> None:
    _, endpoint = deploy(emulator)
    chunks = await ok(bearer, "POST", url(emulator, endpoint.name) + ":streamGenerateContent", prompt("1"))
    assert isinstance(chunks, list)
    assert len(chunks) == 1  # a one-character answer is not cut
    assert chunks[0]["candidates"][0]["content"]["parts"][0]["text"] == "2"
    assert chunks[0]["candidates"][0]["finishReason"] == "STOP"


async def test_generate_refuses_bad_requests(emulator: Emulator, bearer: aiohttp.ClientSession) -> None:
    _, endpoint = deploy(emulator)
    status, answer = await call(bearer, "POST", url(emulator, endpoint.name) + ":generateContent", {})
    assert (status, answer["error"]["status"]) == (400, "INVALID_ARGUMENT")
    too_long = prompt("x" * (131_072 * 4 + 1))
    status, answer = await call(bearer, "POST", url(emulator, endpoint.name) + ":generateContent", too_long)
    assert (status, answer["error"]["status"]) == (400, "INVALID_ARGUMENT")
    missing = f"{PARENT}/endpoints/123"
    status, answer = await call(bearer, "POST", url(emulator, missing) + ":generateContent", prompt("1"))
    assert status == 404
    assert answer["error"]["message"] == f"Endpoint `{missing}` not found."


async def test_endpoint_get(emulator: Emulator, bearer: aiohttp.ClientSession) -> None:
    model, endpoint = deploy(emulator)
    body = await ok(bearer, "GET", url(emulator, endpoint.name, "v1beta1"))
    assert body["name"] == endpoint.name
    assert body["displayName"] == "numbers"
    assert body["labels"] == LABELS
    [deployed] = body["deployedModels"]
    assert deployed["id"] == endpoint.deployed_model_id
    assert deployed["model"] == model.name
    assert deployed["modelVersionId"] == "1"
    assert deployed["displayName"] == "numbers"
    assert body["trafficSplit"] == {deployed["id"]: 100}
    assert body["createTime"] == body["updateTime"] == deployed["createTime"]
    assert body["etag"]


async def test_model_get_with_and_without_version(emulator: Emulator, bearer: aiohttp.ClientSession) -> None:
    model, endpoint = deploy(emulator)
    body = await ok(bearer, "GET", url(emulator, model.name))
    assert await ok(bearer, "GET", url(emulator, model.versioned_name)) == body
    assert body["name"] == model.name
    assert body["versionId"] == "1"
    assert body["versionAliases"] == ["default"]
    assert body["labels"] == LABELS
    assert body["deployedModels"] == [{"endpoint": endpoint.name, "deployedModelId": endpoint.deployed_model_id}]
    status, answer = await call(bearer, "GET", url(emulator, f"{model.name}@2"))
    assert status == 404
    assert answer["error"]["status"] == "NOT_FOUND"


async def test_undeploy_then_delete_model_and_endpoint(emulator: Emulator, bearer: aiohttp.ClientSession) -> None:
    model, endpoint = deploy(emulator)
    before = await ok(bearer, "GET", url(emulator, endpoint.name))
    undeploy = await ok(
        bearer,
        "POST",
        url(emulator, endpoint.name) + ":undeployModel",
        {"deployedModelId": endpoint.deployed_model_id},
    )
    assert undeploy["name"].startswith(f"{endpoint.name}/operations/")
    assert undeploy["done"] is True
    assert undeploy["response"] == {"@type": "type.googleapis.com/google.cloud.aiplatform.v1.UndeployModelResponse"}
    assert undeploy["metadata"]["@type"].endswith("v1.UndeployModelOperationMetadata")
    assert await ok(bearer, "GET", url(emulator, undeploy["name"])) == undeploy

    after = await ok(bearer, "GET", url(emulator, endpoint.name))
    assert "deployedModels" not in after and "trafficSplit" not in after
    assert after["etag"] != before["etag"]
    assert "deployedModels" not in await ok(bearer, "GET", url(emulator, model.name))
    status, answer = await call(bearer, "POST", url(emulator, endpoint.name) + ":generateContent", prompt("1"))
    assert (status, answer["error"]["status"]) == (400, "FAILED_PRECONDITION")

    deleted = await ok(bearer, "DELETE", url(emulator, model.name, "v1beta1"))
    assert deleted["name"].startswith(f"{PARENT}/operations/")
    assert deleted["done"] is True
    assert deleted["response"] == {"@type": "type.googleapis.com/google.protobuf.Empty"}
    assert deleted["metadata"]["@type"].endswith("v1beta1.DeleteOperationMetadata")
    assert await ok(bearer, "GET", url(emulator, deleted["name"], "v1beta1")) == deleted
    status, answer = await call(bearer, "GET", url(emulator, model.name))
    assert status == 404
    assert answer["error"]["message"] == f"Model `{model.name}` not found."

    await ok(bearer, "DELETE", url(emulator, endpoint.name))
    status, answer = await call(bearer, "GET", url(emulator, endpoint.name))
    assert status == 404
    assert answer == {
        "error": {"code": 404, "message": f"Endpoint `{endpoint.name}` not found.", "status": "NOT_FOUND"}
    }
    status, _ = await call(bearer, "DELETE", url(emulator, endpoint.name))
    assert status == 404


async def test_deployed_model_and_its_endpoint_cannot_be_deleted(
    emulator: Emulator, bearer: aiohttp.ClientSession
) -> None:
    model, endpoint = deploy(emulator)
    status, answer = await call(bearer, "DELETE", url(emulator, model.versioned_name))
    assert (status, answer["error"]["status"]) == (400, "FAILED_PRECONDITION")
    assert endpoint.name in answer["error"]["message"]
    status, answer = await call(bearer, "DELETE", url(emulator, endpoint.name))
    assert (status, answer["error"]["status"]) == (400, "FAILED_PRECONDITION")
    # Both are still there and still serving.
    await ok(bearer, "GET", url(emulator, model.name))
    await ok(bearer, "POST", url(emulator, endpoint.name) + ":generateContent", prompt("1"))


async def test_undeploy_checks_the_deployed_model_id(emulator: Emulator, bearer: aiohttp.ClientSession) -> None:
    _, endpoint = deploy(emulator)
    status, answer = await call(bearer, "POST", url(emulator, endpoint.name) + ":undeployModel", {})
    assert (status, answer["error"]["status"]) == (400, "INVALID_ARGUMENT")
    status, answer = await call(
        bearer, "POST", url(emulator, endpoint.name) + ":undeployModel", {"deployedModelId": "1"}
    )
    assert (status, answer["error"]["status"]) == (404, "NOT_FOUND")
    assert "deployedModels" in await ok(bearer, "GET", url(emulator, endpoint.name))


async def test_unknown_operations_are_not_found(emulator: Emulator, bearer: aiohttp.ClientSession) -> None:
    _, endpoint = deploy(emulator)
    for name in (f"{PARENT}/operations/1", f"{endpoint.name}/operations/1", f"{PARENT}/models/2/operations/3"):
        status, answer = await call(bearer, "GET", url(emulator, name))
        assert (status, answer["error"]["status"]) == (404, "NOT_FOUND"), name


async def test_tuning_experiment_context(emulator: Emulator, bearer: aiohttp.ClientSession) -> None:
    name = f"{PARENT}/metadataStores/default/contexts/tuning-experiment-20261204165734"
    context = await ok(bearer, "GET", url(emulator, name))
    assert context["name"] == name
    assert context["schemaTitle"] == "system.Experiment"
    assert context["displayName"] == "tuning-experiment-20261204165734"
    status, _ = await call(bearer, "GET", url(emulator, f"{PARENT}/metadataStores/default/contexts/other"))
    assert status == 404


async def test_every_route_wants_an_issued_token(emulator: Emulator) -> None:
    model, endpoint = deploy(emulator)
    requests = [
        ("POST", url(emulator, endpoint.name) + ":generateContent", prompt("1")),
        ("POST", url(emulator, endpoint.name) + ":streamGenerateContent?alt=sse", prompt("1")),
        ("GET", url(emulator, endpoint.name), None),
        ("POST", url(emulator, endpoint.name) + ":undeployModel", {"deployedModelId": endpoint.deployed_model_id}),
        ("DELETE", url(emulator, endpoint.name), None),
        ("GET", url(emulator, model.name), None),
        ("DELETE", url(emulator, model.name), None),
        ("GET", url(emulator, f"{PARENT}/operations/1"), None),
    ]
    for headers in ({}, {"Authorization": "Bearer ya29.not-issued"}, {"x-goog-api-key": "a-key"}):
        async with aiohttp.ClientSession(headers=headers) as client:
            for method, target, body in requests:
                status, answer = await call(client, method, target, body)
                assert (status, answer["error"]["status"]) == (401, "UNAUTHENTICATED"), (method, target, headers)
    # Nothing took effect: the model is still deployed and both still exist.
    assert emulator.state.deployments.endpoint(endpoint.name).model is model
    assert emulator.state.deployments.model(model.name).deployed_to == endpoint.name


async def test_stats_count_deployments_and_generate_calls(emulator: Emulator, bearer: aiohttp.ClientSession) -> None:
    _, endpoint = deploy(emulator)
    deploy(emulator)
    await ok(bearer, "POST", url(emulator, endpoint.name) + ":generateContent", prompt("1"))
    await ok(bearer, "POST", url(emulator, endpoint.name) + ":streamGenerateContent", prompt("1"))
    stats = emulator.stats()
    deployments = stats["deployments"]
    assert (deployments["models"], deployments["endpoints"], deployments["deployed"]) == (2, 2, 2)
    assert deployments["generate_calls"] == 2
    assert deployments["generate_calls_by_endpoint"][endpoint.name] == 2
    by_route = stats["requests"]["by_route"]
    assert by_route["endpoints.generateContent"] == 1
    assert by_route["endpoints.streamGenerateContent"] == 1


@pytest.mark.parametrize(
    "path",
    [
        "/v1/projects/p/locations/l/tuningJobs",
        "/v1/projects/p/locations/l/tuningJobs/1:cancel",
        "/v1beta1/projects/p/locations/l/publishers/google/models/gemini-2.5-flash:generateContent",
        "/v1beta/tunedModels/x:generateContent",
        "/v2/projects/p/locations/l/endpoints/1",
        "/v1/projects/p/locations/l/endpoints/1/deployedModels",
    ],
)
def test_paths_of_other_surfaces_are_left_alone(path: str) -> None:
    surface = VertexServingSurface()
    assert surface.resolve("GET", path, path) is None
    assert surface.resolve("POST", path, path) is None
