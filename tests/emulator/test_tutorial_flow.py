"""The tutorial's REST flow end to end, with a raw HTTP client and its bodies verbatim."""

from __future__ import annotations

import aiohttp

from tests.emulator.conftest import KEY_HEADERS, TUTORIAL_PAIRS, call, tutorial_body, wait_done
from tunekeeper.emulator import Emulator

CREATE_METADATA = "type.googleapis.com/google.ai.generativelanguage.v1beta.CreateTunedModelMetadata"
TUNED_MODEL = "type.googleapis.com/google.ai.generativelanguage.v1beta.TunedModel"


async def test_tutorial_flow(emulator: Emulator) -> None:
    base = emulator.base_url
    async with aiohttp.ClientSession() as session:
        # curl -X POST "$BASE/v1beta/tunedModels?key=$KEY" -H 'Content-Type: application/json' -d '{...,}'
        status, operation = await call(
            session, "POST", f"{base}/v1beta/tunedModels", tutorial_body(), params={"key": "some-key"}
        )
        assert status == 200, operation
        model_name = operation["metadata"]["tunedModel"]
        assert model_name.startswith("tunedModels/number-generator-model-")
        assert operation["name"].startswith(f"{model_name}/operations/")
        assert operation["metadata"] == {"@type": CREATE_METADATA, "totalSteps": 38, "tunedModel": model_name}
        assert "done" not in operation

        # Listed at once, still tuning.
        status, listing = await call(session, "GET", f"{base}/v1beta/tunedModels", headers=KEY_HEADERS)
        assert status == 200
        assert [(m["name"], m["state"]) for m in listing["tunedModels"]] == [(model_name, "CREATING")]

        # The tutorial polls the operation under /v1/ until it is done.
        async with aiohttp.ClientSession(headers=KEY_HEADERS) as keyed:
            done = await wait_done(keyed, emulator, operation["name"])
        assert done["done"] is True
        assert "error" not in done
        assert done["metadata"]["completedSteps"] == 38
        assert done["metadata"]["completedPercent"] == 100
        epochs = [snapshot["epoch"] for snapshot in done["metadata"]["snapshots"]]
        assert epochs == [1, 2, 3, 4, 5]
        response = done["response"]
        assert response["@type"] == TUNED_MODEL
        assert response["name"] == model_name
        assert response["state"] == "ACTIVE"

        status, model = await call(session, "GET", f"{base}/v1beta/{model_name}", headers=KEY_HEADERS)
        assert status == 200
        assert model["state"] == "ACTIVE"
        assert model["displayName"] == "number generator model"
        assert model["baseModel"] == "models/gemini-1.5-flash-001-tuning"
        assert model["tuningTask"]["hyperparameters"] == {"epochCount": 5, "batchSize": 2, "learningRate": 0.001}
        assert model["tuningTask"]["snapshots"][-1]["step"] == 38
        assert "completeTime" in model["tuningTask"]
        assert "startTime" in model["tuningTask"]
        assert "trainingData" not in model["tuningTask"]
        losses = [snapshot["meanLoss"] for snapshot in model["tuningTask"]["snapshots"]]
        assert losses == sorted(losses, reverse=True)
        assert len(set(losses)) == 5

        status, answer = await call(
            session,
            "POST",
            f"{base}/v1beta/{model_name}:generateContent",
            {"contents": [{"parts": [{"text": "LXIII"}]}]},
            headers=KEY_HEADERS,
        )
        assert status == 200, answer
        candidate = answer["candidates"][0]
        assert candidate["content"]["role"] == "model"
        outputs = {output for _, output in TUTORIAL_PAIRS}
        assert candidate["content"]["parts"][0]["text"] in outputs
        assert candidate["finishReason"] == "STOP"
        usage = answer["usageMetadata"]
        assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"] > 0

        # A prompt identical to a training input gets that example's output.
        status, answer = await call(
            session,
            "POST",
            f"{base}/v1/{model_name}:generateContent",
            {"contents": [{"role": "user", "parts": [{"text": "twenty two"}]}]},
            headers=KEY_HEADERS,
        )
        assert status == 200
        assert answer["candidates"][0]["content"]["parts"][0]["text"] == "twenty three"

        status, listing = await call(
            session, "GET", f"{base}/v1beta/tunedModels", params={"page_size": "5"}, headers=KEY_HEADERS
        )
        assert status == 200
        assert [m["name"] for m in listing["tunedModels"]] == [model_name]
        assert "nextPageToken" not in listing

        status, deleted = await call(session, "DELETE", f"{base}/v1beta/{model_name}", headers=KEY_HEADERS)
        assert (status, deleted) == (200, {})
        status, missing = await call(session, "GET", f"{base}/v1beta/{model_name}", headers=KEY_HEADERS)
        assert status == 404
        assert missing == {
            "error": {"code": 404, "message": f"Tuned model {model_name} does not exist.", "status": "NOT_FOUND"}
        }
        status, listing = await call(session, "GET", f"{base}/v1beta/tunedModels", headers=KEY_HEADERS)
        assert (status, listing) == (200, {})
