"""A user's script with google-cloud-aiplatform's `vertexai.tuning.sft`, run unchanged against the emulator.

It runs in its own virtual environment (`.venv-aiplatform`: google-cloud-aiplatform pins google-genai below
3, which the test extra's google-genai is not), so it imports nothing of tunekeeper or the tests. Arguments:
BASE_URL KEY_FILE PROJECT LOCATION DATASET_URI. It prints one JSON object: what it saw of the job.
"""

import json
import sys
import time

import vertexai
from google.oauth2 import service_account
from vertexai.tuning import sft


def main() -> None:
    base_url, key_file, project, location, dataset_uri = sys.argv[1:6]
    credentials = service_account.Credentials.from_service_account_file(
        key_file, scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    vertexai.init(
        project=project, location=location, credentials=credentials, api_endpoint=base_url, api_transport="rest"
    )
    job = sft.train(
        source_model="gemini-2.5-flash",
        train_dataset=dataset_uri,
        epochs=2,
        adapter_size=4,
        learning_rate_multiplier=1.0,
        tuned_model_display_name="aiplatform proof",
        labels={"proof": "aiplatform"},
    )
    states = [job.state.name]
    deadline = time.monotonic() + 60.0
    while not job.has_ended and time.monotonic() < deadline:
        time.sleep(0.05)  # the script's poll interval, as a user's loop would have (the emulator's steps are tiny)
        job.refresh()
        if job.state.name != states[-1]:
            states.append(job.state.name)
    print(
        json.dumps(
            {
                "name": job.resource_name,
                "states": states,
                "has_ended": job.has_ended,
                "has_succeeded": job.has_succeeded,
                "tuned_model_name": job.tuned_model_name,
                "tuned_model_endpoint_name": job.tuned_model_endpoint_name,
                "experiment": job.experiment.resource_name if job.experiment is not None else None,
            }
        )
    )


if __name__ == "__main__":
    main()
