"""What a succeeded tuning job leaves, through the client: the endpoint answers prompts, and removal in Google's
order (undeploy, then delete model and endpoint) leaves nothing, each removed resource then NotFound."""

from __future__ import annotations

import pytest

from tests.vertex.test_tuning_jobs import spec, until_ended
from tunekeeper.backends.googleapi.errors import FailedPrecondition, NotFound
from tunekeeper.backends.vertex.client import VertexClient
from tunekeeper.backends.vertex.types import JobState, TunedModelRef
from tunekeeper.emulator import Emulator


async def tuned(client: VertexClient, training_uri: str) -> TunedModelRef:
    created = await client.create_tuning_job(spec(training_uri))
    job = await until_ended(client, created.name)
    assert job.state is JobState.SUCCEEDED
    assert job.tuned_model is not None
    return job.tuned_model


async def test_the_endpoint_answers_with_the_tuned_model(
    client: VertexClient, training_data: str, emulator: Emulator
) -> None:
    model = await tuned(client, training_data)

    answer = await client.generate_text(model.endpoint, "question 5")

    assert answer == "answer 5"  # the emulator answers the output of the most similar training input
    generated = emulator.stats()["deployments"]["generate_calls_by_endpoint"]
    assert generated == {model.endpoint: 1}


async def test_undeploy_then_delete_model_and_endpoint_leaves_nothing(
    client: VertexClient, training_data: str, emulator: Emulator
) -> None:
    model = await tuned(client, training_data)
    endpoint = await client.get_endpoint(model.endpoint)
    assert endpoint.name == model.endpoint
    assert len(endpoint.deployed_model_ids) == 1
    assert endpoint.deployed_models[0].model == model.model.removesuffix("@1")

    # Google's order: neither the deployed model nor the serving endpoint can be deleted.
    with pytest.raises(FailedPrecondition):
        await client.delete_model(model.model)
    with pytest.raises(FailedPrecondition):
        await client.delete_endpoint(model.endpoint)

    undeployed = await client.undeploy_model(model.endpoint, endpoint.deployed_model_ids[0])
    assert undeployed.done and undeployed.error is None
    assert (await client.get_endpoint(model.endpoint)).deployed_model_ids == ()
    with pytest.raises(FailedPrecondition):  # nothing left to answer with
        await client.generate_text(model.endpoint, "question 5")

    assert (await client.delete_model(model.model)).done
    assert (await client.delete_endpoint(model.endpoint)).done

    with pytest.raises(NotFound):
        await client.get_endpoint(model.endpoint)
    with pytest.raises(NotFound):
        await client.delete_model(model.model)
    with pytest.raises(NotFound):
        await client.delete_endpoint(model.endpoint)
    counts = emulator.stats()["deployments"]
    assert (counts["models"], counts["endpoints"]) == (0, 0)


async def test_the_operation_of_a_removal_can_be_read_again(client: VertexClient, training_data: str) -> None:
    model = await tuned(client, training_data)
    endpoint = await client.get_endpoint(model.endpoint)
    operation = await client.undeploy_model(model.endpoint, endpoint.deployed_model_ids[0])

    assert await client.get_operation(operation.name) == operation


async def test_undeploying_an_id_the_endpoint_does_not_serve_is_not_found(
    client: VertexClient, training_data: str
) -> None:
    model = await tuned(client, training_data)
    with pytest.raises(NotFound):
        await client.undeploy_model(model.endpoint, "1")
    with pytest.raises(ValueError, match="deployed model id"):
        await client.undeploy_model(model.endpoint, "1/../2")
