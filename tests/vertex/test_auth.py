"""Access tokens: fetched with the key file through the emulator's real JWT flow, refreshed before they
expire, fetched anew after a 401, and refusals typed; key files and ADC found and checked."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.vertex.conftest import BUCKET, LOCATION, PROJECT, QUICK_RETRIES, RecordingObserver, emulator_config
from tests.waiting import wait_until
from tunekeeper.backends.googleapi.errors import ConnectionFailed, PermissionDenied, Unauthenticated
from tunekeeper.backends.vertex.auth import GoogleTokens, adc_file
from tunekeeper.backends.vertex.client import VertexClient
from tunekeeper.emulator import Emulator

MISSING = f"gs://{BUCKET}/missing.jsonl"


def token_fetches(emu: Emulator) -> int:
    return int(emu.stats()["requests"]["by_route"].get("oauth2.token", 0))


def unauthorized(emu: Emulator) -> int:
    return int(emu.stats()["requests"]["by_status"].get("401", 0))


def client_of(emu: Emulator, tokens: object, observer: RecordingObserver | None = None) -> VertexClient:
    return VertexClient(
        project=PROJECT,
        location=LOCATION,
        base_url=emu.base_url,
        storage_url=emu.base_url,
        tokens=tokens,  # type: ignore[arg-type]
        retry=QUICK_RETRIES,
        observer=observer,
    )


async def test_a_token_is_fetched_once_and_shared_by_concurrent_calls(client: VertexClient, emulator: Emulator) -> None:
    await asyncio.gather(*(client.storage.stat(MISSING) for _ in range(8)))
    await client.storage.stat(MISSING)
    assert token_fetches(emulator) == 1
    assert unauthorized(emulator) == 0


async def test_a_short_lived_token_is_refreshed_before_it_expires(tmp_path: Path) -> None:
    async with Emulator(emulator_config(token_lifetime=2)) as emu:
        key = emu.write_service_account_file(tmp_path / "key.json", project=PROJECT)
        async with GoogleTokens(key_file=key) as tokens, client_of(emu, tokens) as client:

            async def third_token() -> bool:
                assert await client.storage.stat(MISSING) is None
                return token_fetches(emu) >= 3

            await wait_until(third_token, within=10, interval=0.05, message="a third token")
            assert unauthorized(emu) == 0  # every token was replaced before the emulator would refuse it


async def test_a_token_the_service_forgot_is_replaced_after_one_401(
    client: VertexClient, emulator: Emulator, observer: RecordingObserver
) -> None:
    await client.storage.upload(f"gs://{BUCKET}/x", b"x")
    emulator.state.tokens.reset()  # every issued token is now unknown: the next call meets 401

    info = await client.storage.stat(f"gs://{BUCKET}/x")

    assert info is not None and info.size == 1
    assert unauthorized(emulator) == 1
    assert token_fetches(emulator) == 2
    assert ("storage.objects.get", "401") in observer.finished
    assert observer.retries == []  # the fresh-token retry is not a back-off retry


@dataclass
class FixedToken:
    """A token source whose token the service never accepts."""

    token: str = "ya29.never-issued-by-anyone"
    invalidated: int = 0

    async def authorization(self) -> str:
        return f"Bearer {self.token}"

    def invalidate(self) -> None:
        self.invalidated += 1


async def test_a_second_401_is_unauthenticated(emulator: Emulator, observer: RecordingObserver) -> None:
    source = FixedToken()
    async with client_of(emulator, source, observer) as client:
        with pytest.raises(Unauthenticated) as raised:
            await client.get_tuning_job(f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs/1")

    assert isinstance(raised.value, PermissionDenied)
    assert raised.value.http_status == 401
    assert source.invalidated == 1
    assert unauthorized(emulator) == 2  # the request and its one retry with a "fresh" token


async def test_a_key_the_token_endpoint_refuses_is_unauthenticated_at_once(
    emulator: Emulator, tmp_path: Path, observer: RecordingObserver
) -> None:
    info = emulator.service_account_info(PROJECT)
    info["client_email"] = "someone-else@tk-project.iam.gserviceaccount.com"  # not the key's account
    key = tmp_path / "other.json"
    key.write_text(json.dumps(info))
    async with GoogleTokens(key_file=key) as tokens, client_of(emulator, tokens, observer) as client:
        with pytest.raises(Unauthenticated) as raised:
            await client.storage.stat(MISSING)
    assert raised.value.message.startswith("token endpoint refused: invalid_grant: Invalid JWT")
    assert observer.retries == []
    assert token_fetches(emulator) == 1


async def test_an_unreachable_token_endpoint_is_retried_then_connection_failed(
    emulator: Emulator, tmp_path: Path, observer: RecordingObserver
) -> None:
    info = emulator.service_account_info(PROJECT)
    info["token_uri"] = "http://127.0.0.1:9/token"  # the discard port: nothing listens
    key = tmp_path / "unreachable.json"
    key.write_text(json.dumps(info))
    async with GoogleTokens(key_file=key) as tokens, client_of(emulator, tokens, observer) as client:
        with pytest.raises(ConnectionFailed):
            await client.storage.stat(MISSING)
    assert len(observer.retries) == QUICK_RETRIES.max_retries
    assert {status for _, status, _ in observer.retries} == {"connection_error"}


async def test_application_default_credentials_come_from_the_environment(
    key_file: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    async with GoogleTokens() as tokens:
        assert (await tokens.authorization()).startswith("Bearer ya29.emulator-")
        assert str(key_file) in repr(tokens)


def test_adc_file_prefers_the_environment_then_gcloud(tmp_path: Path) -> None:
    gcloud = tmp_path / "gcloud"
    gcloud.mkdir()
    assert adc_file({"CLOUDSDK_CONFIG": str(gcloud)}) is None
    (gcloud / "application_default_credentials.json").write_text("{}")
    assert adc_file({"CLOUDSDK_CONFIG": str(gcloud)}) == gcloud / "application_default_credentials.json"
    named = {"CLOUDSDK_CONFIG": str(gcloud), "GOOGLE_APPLICATION_CREDENTIALS": "/nowhere/key.json"}
    assert adc_file(named) == Path("/nowhere/key.json")


def test_unusable_key_files_fail_at_start_naming_the_path_only(emulator: Emulator, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        GoogleTokens(key_file=tmp_path / "absent.json")

    garbled = tmp_path / "garbled.json"
    garbled.write_text('{"type": "service_account", "private_key": "-----BEGIN')
    with pytest.raises(ValueError, match="is not JSON") as not_json:
        GoogleTokens(key_file=garbled)
    assert "BEGIN" not in str(not_json.value)

    info = emulator.service_account_info(PROJECT)
    info["private_key"] = info["private_key"].replace("A", "B")  # still PEM-shaped, no longer a key
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="not a PEM private key") as bad_key:
        GoogleTokens(key_file=broken)
    assert "PRIVATE KEY" not in str(bad_key.value)
    assert bad_key.value.__cause__ is None and bad_key.value.__suppress_context__
