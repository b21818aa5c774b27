"""Tuned models and the endpoints that serve them: what a succeeded tuning job leaves behind.

A succeeded job registers one model (`projects/P/locations/L/models/ID`, version 1) deployed to one endpoint
(`projects/P/locations/L/endpoints/ID`). The endpoint answers generateContent from the model's training
examples. Removing it all takes the order Google imposes: undeploy the model from the endpoint (or delete the
endpoint), then delete the model; a model that is still deployed cannot be deleted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tunekeeper.emulator.errors import ApiError

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


class Deployments:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self._models: dict[str, TunedModelResource] = {}
        self._endpoints: dict[str, EndpointResource] = {}
        self._ids = random.Random(f"{self.seed}:vertex-deployments")

    def _new_id(self) -> str:
        # Vertex's model and endpoint ids are 19-digit numbers chosen by the server.
        return str(self._ids.randrange(10**18, 10**19))

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
        endpoint = EndpointResource(f"{parent}/endpoints/{self._new_id()}", display_name, dict(labels), now)
        endpoint.deployed_model_id = self._new_id()
        endpoint.model = model
        model.deployed_to = endpoint.name
        self._models[model.name] = model
        self._endpoints[endpoint.name] = endpoint
        return model, endpoint

    def model(self, name: str) -> TunedModelResource:
        """A model by its name, with or without `@version`."""
        base, _, version = name.partition("@")
        model = self._models.get(base)
        if model is None or version not in ("", MODEL_VERSION):
            raise ApiError("NOT_FOUND", f'Model "{name}" does not exist.')
        return model

    def endpoint(self, name: str) -> EndpointResource:
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            raise ApiError("NOT_FOUND", f'Endpoint "{name}" does not exist.')
        return endpoint

    def undeploy(self, endpoint_name: str, deployed_model_id: str) -> None:
        endpoint = self.endpoint(endpoint_name)
        if endpoint.deployed_model_id is None or endpoint.deployed_model_id != deployed_model_id:
            raise ApiError(
                "NOT_FOUND", f"Deployed model {deployed_model_id} does not exist on endpoint {endpoint_name}."
            )
        if endpoint.model is not None:
            endpoint.model.deployed_to = None
        endpoint.deployed_model_id = None
        endpoint.model = None

    def delete_endpoint(self, name: str) -> None:
        """Deleting an endpoint undeploys what it serves (Google refuses while models are deployed; see README)."""
        endpoint = self.endpoint(name)
        if endpoint.model is not None:
            endpoint.model.deployed_to = None
        del self._endpoints[name]

    def delete_model(self, name: str) -> None:
        model = self.model(name)
        if model.deployed_to is not None:
            raise ApiError(
                "FAILED_PRECONDITION",
                f"The model {model.name} is deployed to endpoint {model.deployed_to}: undeploy it first.",
            )
        del self._models[model.name]

    def models(self) -> list[TunedModelResource]:
        return list(self._models.values())

    def endpoints(self) -> list[EndpointResource]:
        return list(self._endpoints.values())
