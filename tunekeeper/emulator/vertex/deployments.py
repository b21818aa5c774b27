"""Tuned models and the endpoints that serve them: what a succeeded tuning job leaves behind.

A succeeded job registers one model (`projects/P/locations/L/models/ID`, version 1) deployed to one endpoint
(`projects/P/locations/L/endpoints/ID`). The endpoint answers generateContent from the model's training
examples. Removing it all takes the order Google imposes: undeploy the model from the endpoint, then delete the
model and the endpoint; a model that is still deployed cannot be deleted, nor an endpoint that still serves one.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from typing import Any

from tunekeeper.emulator.errors import ApiError
from tunekeeper.emulator.vertex.operations import Operations

MODEL_VERSION = "1"


@dataclass(slots=True, eq=False)
class TunedModelResource:
    name: str  # projects/P/locations/L/models/ID (without the version)
    display_name: str
    base_model: str
    examples: tuple[tuple[str, str], ...]  # (input, output) pairs the endpoint answers from
    labels: dict[str, str]
    tuning_job: str  # the tuning job's resource name
    created_at: float
    deployed_to: str | None = None  # the endpoint's name while deployed
    deployed_model_id: str | None = None  # its id on that endpoint
    updated_at: float = 0.0  # set to created_at by Deployments.deploy

    @property
    def versioned_name(self) -> str:
        return f"{self.name}@{MODEL_VERSION}"


@dataclass(slots=True, eq=False)
class EndpointResource:
    name: str  # projects/P/locations/L/endpoints/ID
    display_name: str
    labels: dict[str, str]
    created_at: float
    deployed_model_id: str | None = None  # the deployed model's id on this endpoint, while one is deployed
    model: TunedModelResource | None = field(default=None)
    deployed_at: float = 0.0  # when the model now deployed was deployed
    updated_at: float = 0.0
    generate_calls: int = 0  # generateContent and streamGenerateContent answered


class Deployments:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.operations = Operations(seed)  # the undeploy and delete operations answered
        self.reset()

    def reset(self) -> None:
        self.operations.reset()
        self._models: dict[str, TunedModelResource] = {}
        self._endpoints: dict[str, EndpointResource] = {}
        self._ids = random.Random(f"{self.seed}:vertex-deployments")
        self._generate_calls_of_deleted = 0  # keeps the total steady when an endpoint is deleted
        self._response_ids = random.Random(f"{self.seed}:vertex-response-ids")

    def _new_id(self) -> str:
        # Vertex's model and endpoint ids are 19-digit numbers chosen by the server.
        return str(self._ids.randrange(10**18, 10**19))

    def new_response_id(self) -> str:
        """A generate answer's `responseId`: 23 URL-safe characters, like Vertex's."""
        return base64.urlsafe_b64encode(self._response_ids.randbytes(17)).decode().rstrip("=")

    def deploy(
        self,
        parent: str,
        display_name: str,
        base_model: str,
        examples: tuple[tuple[str, str], ...],
        labels: dict[str, str],
        tuning_job: str,
        now: float,
    ) -> tuple[TunedModelResource, EndpointResource]:
        """Register the model a job tuned and deploy it to a new endpoint. `parent` is projects/P/locations/L."""
        model = TunedModelResource(
            f"{parent}/models/{self._new_id()}", display_name, base_model, examples, dict(labels), tuning_job, now
        )
        model.updated_at = now
        endpoint = EndpointResource(f"{parent}/endpoints/{self._new_id()}", display_name, dict(labels), now)
        endpoint.deployed_model_id = model.deployed_model_id = self._new_id()
        endpoint.model = model
        endpoint.deployed_at = endpoint.updated_at = now
        model.deployed_to = endpoint.name
        self._models[model.name] = model
        self._endpoints[endpoint.name] = endpoint
        return model, endpoint

    def model(self, name: str) -> TunedModelResource:
        """A model by its name, with or without `@version`."""
        base, _, version = name.partition("@")
        model = self._models.get(base)
        if model is None or version not in ("", MODEL_VERSION):
            raise ApiError("NOT_FOUND", f"Model `{name}` not found.")
        return model

    def endpoint(self, name: str) -> EndpointResource:
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            raise ApiError("NOT_FOUND", f"Endpoint `{name}` not found.")
        return endpoint

    def undeploy(self, endpoint_name: str, deployed_model_id: str, now: float) -> None:
        endpoint = self.endpoint(endpoint_name)
        if endpoint.deployed_model_id is None or endpoint.deployed_model_id != deployed_model_id:
            raise ApiError(
                "NOT_FOUND", f"DeployedModel with ID {deployed_model_id} not found on Endpoint `{endpoint_name}`."
            )
        if endpoint.model is not None:
            endpoint.model.deployed_to = None
            endpoint.model.deployed_model_id = None
            endpoint.model.updated_at = now
        endpoint.deployed_model_id = None
        endpoint.model = None
        endpoint.updated_at = now

    def delete_endpoint(self, name: str) -> None:
        """Google refuses to delete an endpoint that still serves a model: undeploy it first."""
        endpoint = self.endpoint(name)
        if endpoint.model is not None:
            raise ApiError(
                "FAILED_PRECONDITION",
                f"Endpoint `{name}` has deployed or being deployed DeployedModel(s): "
                f"{endpoint.deployed_model_id}. Undeploy them before deleting the Endpoint.",
            )
        self._generate_calls_of_deleted += endpoint.generate_calls
        del self._endpoints[name]

    def delete_model(self, name: str) -> None:
        model = self.model(name)
        if model.deployed_to is not None:
            raise ApiError(
                "FAILED_PRECONDITION",
                f"Model `{model.name}` is deployed or being deployed at the following Endpoint(s): "
                f"{model.deployed_to}. Undeploy it before deleting the Model.",
            )
        del self._models[model.name]

    def models(self) -> list[TunedModelResource]:
        return list(self._models.values())

    def endpoints(self) -> list[EndpointResource]:
        return list(self._endpoints.values())

    def summary(self) -> dict[str, Any]:
        """For `/emulator/stats`: what exists now, and the generate calls each endpoint answered."""
        return {
            "models": len(self._models),
            "endpoints": len(self._endpoints),
            "deployed": sum(1 for endpoint in self._endpoints.values() if endpoint.model is not None),
            "generate_calls": sum(endpoint.generate_calls for endpoint in self._endpoints.values())
            + self._generate_calls_of_deleted,
            "generate_calls_by_endpoint": {
                endpoint.name: endpoint.generate_calls for endpoint in self._endpoints.values()
            },
        }
