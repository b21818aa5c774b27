"""Google's own auth libraries, unchanged, against the emulator's token endpoint: google-auth (the real JWT-bearer
flow, signature included, and self-signed JWTs) and gcloud-aio-auth."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import google.auth.transport.requests
import pytest
from gcloud.aio.auth import Token
from google.auth.exceptions import RefreshError
from google.oauth2 import service_account
from multidict import CIMultiDict, CIMultiDictProxy

from tests.emulator.conftest import make_config
from tests.waiting import wait_until
from tunekeeper.emulator import Emulator
from tunekeeper.emulator.errors import ApiError
from tunekeeper.emulator.oauth.tokens import CLOUD_PLATFORM_SCOPE, require_bearer

SCOPES = [CLOUD_PLATFORM_SCOPE]


def accepted(emu: Emulator, token: str, now: float | None = None) -> bool:
    try:
        emu.state.tokens.check(token, time.time() if now is None else now)
    except ApiError:
        return False
    return True


async def refresh(credentials: service_account.Credentials) -> None:
    # google-auth is synchronous: in a thread, so that the emulator on this event loop can answer.
    await asyncio.to_thread(credentials.refresh, google.auth.transport.requests.Request())


async def test_google_auth_gets_a_token_from_a_key_file(emulator: Emulator, tmp_path: Path) -> None:
    path = emulator.write_service_account_file(tmp_path / "key.json")
    credentials = service_account.Credentials.from_service_account_file(str(path), scopes=SCOPES)
    assert not credentials.valid
    await refresh(credentials)
    assert credentials.valid
    assert credentials.token is not None and accepted(emulator, credentials.token)
    issued = emulator.state.tokens.check(credentials.token, time.time())
    assert issued.subject == "tunekeeper-emulator@emulator-project.iam.gserviceaccount.com"
    assert emulator.stats()["requests"]["by_route_status"]["oauth2.token"] == {"200": 1}


async def test_google_auth_refreshes_a_short_lived_token(tmp_path: Path) -> None:
    async with Emulator(make_config(token_lifetime=1.0)) as emu:
        credentials = service_account.Credentials.from_service_account_file(
            str(emu.write_service_account_file(tmp_path / "key.json")), scopes=SCOPES
        )
        await refresh(credentials)
        first = credentials.token
        assert first is not None
        await wait_until(lambda: not accepted(emu, first), within=10.0, message="the first token to expire")
        before_second = time.time()
        await refresh(credentials)
        second = credentials.token
        assert second is not None and second != first
        assert accepted(emu, second, now=before_second)  # issued after this instant, valid for a second
        assert not accepted(emu, first, now=before_second)


async def test_google_auth_surfaces_oauths_error(emulator: Emulator) -> None:
    info = emulator.service_account_info()
    unknown_key = service_account.Credentials.from_service_account_info(
        {**info, "private_key_id": "0" * 40}, scopes=SCOPES
    )
    with pytest.raises(RefreshError, match=r"invalid_grant: Invalid JWT Signature\."):
        await refresh(unknown_key)
    no_scope = service_account.Credentials.from_service_account_info(info)
    with pytest.raises(RefreshError, match="invalid_scope"):
        await refresh(no_scope)
    assert emulator.stats()["requests"]["by_route_status"]["oauth2.token"] == {"400": 2}  # no retries


async def test_google_auth_self_signed_jwt_passes_the_bearer_check(emulator: Emulator) -> None:
    # google-cloud-aiplatform's generated clients turn this on: the token endpoint is never called.
    credentials = service_account.Credentials.from_service_account_info(
        emulator.service_account_info(), scopes=SCOPES
    ).with_always_use_jwt_access(True)
    await refresh(credentials)
    assert credentials.token is not None and credentials.token.startswith("eyJ")
    headers = CIMultiDictProxy(CIMultiDict({"Authorization": f"Bearer {credentials.token}"}))
    require_bearer(emulator.state, headers, {}, time.time())  # raises ApiError if refused
    assert "oauth2.token" not in emulator.stats()["requests"]["by_route"]


async def test_gcloud_aio_auth_gets_a_token_from_a_key_file(emulator: Emulator, tmp_path: Path) -> None:
    path = emulator.write_service_account_file(tmp_path / "key.json")
    async with Token(service_file=str(path), scopes=SCOPES) as token:
        access_token = await token.get()
    assert access_token is not None and accepted(emulator, access_token)


async def test_gcloud_aio_auth_surfaces_oauths_error(emulator: Emulator, tmp_path: Path) -> None:
    # Without scopes gcloud-aio-auth asks for none. `refresh` is one attempt (`get` retries for minutes).
    path = emulator.write_service_account_file(tmp_path / "key.json")
    async with Token(service_file=str(path)) as token:
        with pytest.raises(aiohttp.ClientResponseError, match="invalid_scope") as raised:
            await token.refresh(timeout=10)
    assert raised.value.status == 400
