"""Vertex AI's Endpoint, Model, Operation and metadata Context resources as JSON (camelCase, RFC 3339 times).

As in proto3 JSON, empty fields are left out: an endpoint that serves nothing has no `deployedModels` and no
`trafficSplit`. Type URLs name the API version the request used (`google.cloud.aiplatform.v1beta1...` on
`/v1beta1/`), as Google's answers do.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from tunekeeper.emulator.timestamps import rfc3339
from tunekeeper.emulator.vertex.deployments import MODEL_VERSION, EndpointResource, TunedModelResource
from tunekeeper.emulator.vertex.operations import UNDEPLOY, DoneOperation

EXPERIMENT_SCHEMA = "system.Experiment"


def type_url(version: str, message: str) -> str:
    """`type.googleapis.com/google.cloud.aiplatform.v1.UndeployModelResponse` for `v1`."""
    return f"type.googleapis.com/google.cloud.aiplatform.{version}.{message}"


def etag(name: str, updated_at: float) -> str:
    """Changes whenever the resource does (an opaque string, as Google's)."""
    digest = hashlib.sha256(f"{name}@{updated_at!r}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def endpoint_json(endpoint: EndpointResource) -> dict[str, Any]:
    body: dict[str, Any] = {"name": endpoint.name, "displayName": endpoint.display_name}
    model = endpoint.model
    if model is not None and endpoint.deployed_model_id is not None:
        body["deployedModels"] = [
            {
                "id": endpoint.deployed_model_id,
                "model": model.name,
                "modelVersionId": MODEL_VERSION,
                "displayName": model.display_name,
                "createTime": rfc3339(endpoint.deployed_at),
            }
        ]
        body["trafficSplit"] = {endpoint.deployed_model_id: 100}
    body["etag"] = etag(endpoint.name, endpoint.updated_at)
    if endpoint.labels:
        body["labels"] = dict(endpoint.labels)
    body["createTime"] = rfc3339(endpoint.created_at)
    body["updateTime"] = rfc3339(endpoint.updated_at)
    return body


def model_json(model: TunedModelResource) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": model.name,
        "versionId": MODEL_VERSION,
        "versionAliases": ["default"],
        "versionCreateTime": rfc3339(model.created_at),
        "versionUpdateTime": rfc3339(model.updated_at),
        "displayName": model.display_name,
    }
    if model.deployed_to is not None and model.deployed_model_id is not None:
        body["deployedModels"] = [{"endpoint": model.deployed_to, "deployedModelId": model.deployed_model_id}]
    body["createTime"] = rfc3339(model.created_at)
    body["updateTime"] = rfc3339(model.updated_at)
    body["etag"] = etag(model.name, model.updated_at)
    if model.labels:
        body["labels"] = dict(model.labels)
    return body


def operation_json(operation: DoneOperation, version: str) -> dict[str, Any]:
    """A done operation: UndeployModel's response, or a delete's `google.protobuf.Empty`."""
    created = rfc3339(operation.created_at)
    if operation.kind == UNDEPLOY:
        metadata_type = type_url(version, "UndeployModelOperationMetadata")
        response_type = type_url(version, "UndeployModelResponse")
    else:
        metadata_type = type_url(version, "DeleteOperationMetadata")
        response_type = "type.googleapis.com/google.protobuf.Empty"
    return {
        "name": operation.name,
        "metadata": {"@type": metadata_type, "genericMetadata": {"createTime": created, "updateTime": created}},
        "done": True,
        "response": {"@type": response_type},
    }


def context_json(name: str, context_id: str, created_at: float) -> dict[str, Any]:
    """The metadata Context of a tuning job's experiment: what google-cloud-aiplatform checks (`schemaTitle`)."""
    created = rfc3339(created_at)
    return {
        "name": name,
        "displayName": context_id,
        "etag": etag(name, created_at),
        "createTime": created,
        "updateTime": created,
        "schemaTitle": EXPERIMENT_SCHEMA,
        "schemaVersion": "0.0.1",
        "metadata": {},
    }
