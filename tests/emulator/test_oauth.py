"""The OAuth 2.0 token endpoint with raw HTTP: service-account key files, the JWT-bearer grant, OAuth's errors,
the bearer check the Google Cloud surfaces share, and that no token or key reaches the log."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import time
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import CIMultiDict, CIMultiDictProxy

from tests.emulator.conftest import call, make_config
from tunekeeper.emulator import Emulator
from tunekeeper.emulator.errors import ApiError
from tunekeeper.emulator.oauth.tokens import CLOUD_PLATFORM_SCOPE, require_bearer

ROOT = Path(__file__).resolve().parents[2]
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"


@cache
def foreign_private_key() -> str:
    """Another locally generated key, to sign what the emulator must refuse."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode()


def sign(info: dict[str, Any], *, key: str | None = None, kid: str | None = "same", **claims: Any) -> str:
    """An assertion as google-auth makes it from a key file; `claims` override (None removes one)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": info["client_email"],
        "scope": CLOUD_PLATFORM_SCOPE,
        "aud": GOOGLE_TOKEN_URL,
        "iat": now,
        "exp": now + 3600,
    }
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    headers = {"kid": info["private_key_id"] if kid == "same" else kid} if kid is not None else {}
    return jwt.encode(payload, key or info["private_key"], algorithm="RS256", headers=headers)


async def post_token(
    session: aiohttp.ClientSession, emu: Emulator, form: dict[str, str] | None = None, **kwargs: Any
) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
    async with session.post(f"{emu.base_url}/token", data=form, **kwargs) as response:
        return response.status, await response.json(), response.headers


def grant(assertion: str) -> dict[str, str]:
    return {"grant_type": JWT_BEARER, "assertion": assertion}


def bearer_headers(token: str | None) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({"Authorization": f"Bearer {token}"} if token else {}))


def check_bearer(emu: Emulator, token: str | None, now: float | None = None) -> ApiError | None:
    """What require_bearer makes of a token: None when accepted, else its error."""
    try:
        require_bearer(emu.state, bearer_headers(token), {}, time.time() if now is None else now)
    except ApiError as error:
        return error
    return None


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:  # no API key: the token endpoint needs no credential
        yield client


async def test_key_file_is_googles_shape_and_stable(emulator: Emulator) -> None:
    info = emulator.service_account_info()
    assert set(info) == {
        "type",
        "project_id",
        "private_key_id",
        "private_key",
        "client_email",
        "client_id",
        "auth_uri",
        "token_uri",
        "auth_provider_x509_cert_url",
        "client_x509_cert_url",
        "universe_domain",
    }
    assert info["type"] == "service_account"
    assert info["project_id"] == "emulator-project"
    assert info["client_email"] == "tunekeeper-emulator@emulator-project.iam.gserviceaccount.com"
    assert info["token_uri"] == f"{emulator.base_url}/token"
    assert info["private_key"].startswith("-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, as Google's
    assert len(info["private_key_id"]) == 40 and int(info["private_key_id"], 16) >= 0
    assert info["client_id"].isdigit() and len(info["client_id"]) == 21
    assert info["universe_domain"] == "googleapis.com"
    assert emulator.service_account_info() == info  # one account per project for the emulator's life

    other = emulator.service_account_info("other-project")
    assert other["client_email"] == "tunekeeper-emulator@other-project.iam.gserviceaccount.com"
    assert other["private_key_id"] != info["private_key_id"]
    with pytest.raises(ValueError, match="project id"):
        emulator.service_account_info("Not_A_Project")


async def test_key_file_is_written_for_its_owner_only(emulator: Emulator, tmp_path: Path) -> None:
    path = emulator.write_service_account_file(tmp_path / "key.json", project="file-project")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == emulator.service_account_info("file-project")
    assert os.listdir(tmp_path) == ["key.json"]  # no temporary file left behind


async def test_a_good_assertion_gets_a_token_the_bearer_check_accepts(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    info = emulator.service_account_info()
    status, answer, headers = await post_token(session, emulator, grant(sign(info)))
    assert status == 200, answer
    assert set(answer) == {"access_token", "expires_in", "token_type"}
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == 3600
    assert "no-store" in headers["Cache-Control"]
    assert check_bearer(emulator, answer["access_token"]) is None
    issued = emulator.state.tokens.check(answer["access_token"], time.time())
    assert issued.subject == info["client_email"]
    assert issued.scopes == frozenset({CLOUD_PLATFORM_SCOPE})
    assert emulator.stats()["requests"]["by_route_status"]["oauth2.token"] == {"200": 1}


async def test_an_assertion_without_kid_is_checked_against_its_issuers_key(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    # gcloud-aio-auth signs without naming the key.
    info = emulator.service_account_info()
    status, answer, _ = await post_token(session, emulator, grant(sign(info, kid=None, aud=info["token_uri"])))
    assert status == 200, answer
    status, answer, _ = await post_token(session, emulator, grant(sign(info, kid=None, key=foreign_private_key())))
    assert (status, answer["error"]) == (400, "invalid_grant")


async def test_storage_scopes_are_enough_and_extra_scopes_ride_along(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    info = emulator.service_account_info()
    scope = "https://www.googleapis.com/auth/devstorage.read_write https://www.googleapis.com/auth/userinfo.email"
    status, answer, _ = await post_token(session, emulator, grant(sign(info, scope=scope)))
    assert status == 200, answer
    assert emulator.state.tokens.check(answer["access_token"], time.time()).scopes == frozenset(scope.split())


def _bad_signature(info: dict[str, Any]) -> dict[str, str]:
    return grant(sign(info, key=foreign_private_key()))  # same kid, another key


@pytest.mark.parametrize(
    ("form", "error", "description"),
    [
        pytest.param(_bad_signature, "invalid_grant", "Invalid JWT Signature.", id="bad-signature"),
        pytest.param(
            lambda info: grant(sign(info, kid="0" * 40)), "invalid_grant", "Invalid JWT Signature.", id="unknown-kid"
        ),
        pytest.param(
            lambda info: grant(sign(info, iss="someone@else.iam.gserviceaccount.com")),
            "invalid_grant",
            "issuer (iss)",
            id="wrong-iss",
        ),
        pytest.param(
            lambda info: grant(sign(info, iat=int(time.time()) - 4000, exp=int(time.time()) - 400)),
            "invalid_grant",
            "short-lived token",
            id="expired",
        ),
        pytest.param(
            lambda info: grant(sign(info, exp=int(time.time()) + 7200)),
            "invalid_grant",
            "short-lived token",
            id="longer-than-an-hour",
        ),
        pytest.param(
            lambda info: grant(sign(info, iat=int(time.time()) + 600, exp=int(time.time()) + 1200)),
            "invalid_grant",
            "short-lived token",
            id="issued-in-the-future",
        ),
        pytest.param(lambda info: grant(sign(info, exp=None)), "invalid_grant", "exp claim is missing", id="no-exp"),
        pytest.param(lambda info: grant("not.a.jwt"), "invalid_grant", "well-formed", id="malformed"),
        pytest.param(
            lambda info: grant(jwt.encode({"iss": info["client_email"]}, "secret-of-32-bytes-or-more-00000", "HS256")),
            "invalid_grant",
            "RS256",
            id="hs256",
        ),
        pytest.param(
            lambda info: grant(sign(info, scope=None)),
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
            id="no-scope",
        ),
        pytest.param(
            lambda info: grant(sign(info, scope="https://www.googleapis.com/auth/userinfo.email")),
            "invalid_scope",
            "cloud-platform",
            id="unusable-scope",
        ),
        pytest.param(
            lambda info: {"grant_type": "client_credentials", "assertion": sign(info)},
            "unsupported_grant_type",
            "Invalid grant_type: client_credentials",
            id="wrong-grant-type",
        ),
        pytest.param(
            lambda info: {"grant_type": JWT_BEARER},
            "invalid_request",
            "Missing required parameter: assertion",
            id="no-assertion",
        ),
        pytest.param(
            lambda info: {"assertion": sign(info)},
            "invalid_request",
            "Missing required parameter: grant_type",
            id="no-grant-type",
        ),
    ],
)
async def test_refused_grants_get_oauths_errors(
    emulator: Emulator, session: aiohttp.ClientSession, form: Any, error: str, description: str
) -> None:
    info = emulator.service_account_info()
    status, answer, headers = await post_token(session, emulator, form(info))
    assert status == 400
    assert answer["error"] == error
    assert description in answer["error_description"]
    assert set(answer) == {"error", "error_description"}  # OAuth's shape, not Google's API error shape
    assert headers["Content-Type"].startswith("application/json")
    assert len(emulator.state.tokens) == 0  # nothing issued


async def test_a_repeated_parameter_is_an_invalid_request(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    assertion = sign(emulator.service_account_info())
    body = f"grant_type={JWT_BEARER}&assertion={assertion}&assertion={assertion}"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with session.post(f"{emulator.base_url}/token", data=body, headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_request"


async def test_a_json_body_is_read_as_well(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    status, answer, _ = await post_token(session, emulator, json=grant(sign(emulator.service_account_info())))
    assert status == 200, answer


async def test_only_post_reaches_the_token_endpoint(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{emulator.base_url}/token") as response:
        assert response.status == 404
        assert (await response.json())["error"]["status"] == "NOT_FOUND"


async def test_faults_and_the_request_limit_never_reach_the_token_endpoint(session: aiohttp.ClientSession) -> None:
    async with Emulator(make_config(faults={"503": 1.0}, requests_per_minute=1)) as emu:
        info = emu.service_account_info()
        for _ in range(3):
            status, answer, _ = await post_token(session, emu, grant(sign(info)))
            assert status == 200, answer
        async with session.get(f"{emu.base_url}/v1beta/tunedModels?key=k") as response:
            assert response.status == 503  # the faults are on, for the other surfaces
        assert emu.stats()["faults_injected"] == {"503": 1}


async def test_reset_forgets_tokens_but_keeps_the_service_account(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    info = emulator.service_account_info()
    _, before, _ = await post_token(session, emulator, grant(sign(info)))
    emulator.reset()
    error = check_bearer(emulator, before["access_token"])
    assert error is not None and error.http_code == 401
    assert emulator.service_account_info() == info
    status, after, _ = await post_token(session, emulator, grant(sign(info)))
    assert status == 200, after
    assert check_bearer(emulator, after["access_token"]) is None


async def test_the_bearer_check_refuses_missing_unknown_and_expired_tokens(emulator: Emulator) -> None:
    missing = check_bearer(emulator, None)
    assert missing is not None and missing.http_code == 401 and missing.status == "UNAUTHENTICATED"
    assert missing.headers == {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
    assert missing.body()["error"]["details"][0]["reason"] == "CREDENTIALS_MISSING"

    unknown = check_bearer(emulator, "ya29.not-issued-here")
    assert unknown is not None and unknown.http_code == 401
    assert unknown.headers == {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'}
    assert unknown.body()["error"]["details"][0]["reason"] == "ACCESS_TOKEN_INVALID"

    issued = emulator.state.tokens.issue("a@b.iam.gserviceaccount.com", frozenset({CLOUD_PLATFORM_SCOPE}), 1000.0)
    assert check_bearer(emulator, issued.access_token, now=1000.0 + 3599.0) is None
    expired = check_bearer(emulator, issued.access_token, now=1000.0 + 3600.0)
    assert expired is not None and expired.http_code == 401
    assert expired.body()["error"]["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"


async def test_the_bearer_check_accepts_a_registered_keys_self_signed_jwt(emulator: Emulator) -> None:
    # What google-cloud-aiplatform's generated clients send instead of an access token (AIP-4111).
    info = emulator.service_account_info()
    now = int(time.time())
    with_scope = sign(info, sub=info["client_email"], aud=None)
    with_audience = sign(info, sub=info["client_email"], scope=None, aud="https://aiplatform.googleapis.com/")
    assert check_bearer(emulator, with_scope) is None
    assert check_bearer(emulator, with_audience) is None

    refused = {
        "foreign key": sign(info, key=foreign_private_key()),
        "neither scope nor aud": sign(info, scope=None, aud=None),
        "expired": sign(info, iat=now - 4000, exp=now - 400),
    }
    for what, token in refused.items():
        error = check_bearer(emulator, token)
        assert error is not None and error.http_code == 401, what
    expired = check_bearer(emulator, refused["expired"])
    assert expired is not None and expired.body()["error"]["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"


async def test_the_command_writes_a_key_file_and_never_logs_tokens_or_keys(tmp_path: Path) -> None:
    key_path = tmp_path / "key.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tunekeeper",
        "emulator",
        "--port",
        "0",
        "--service-account-file",
        str(key_path),
        "--project",
        "cli-project",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        url = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode().strip()
        assert url.startswith("http://127.0.0.1:"), url
        written = json.loads(await asyncio.wait_for(process.stdout.readline(), timeout=30))
        assert written["event"] == "service_account_file_written"
        assert written["path"] == str(key_path)
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        info = json.loads(key_path.read_text())
        assert info["token_uri"] == f"{url}/token"
        assert info["client_email"] == "tunekeeper-emulator@cli-project.iam.gserviceaccount.com"

        assertion = sign(info)
        async with aiohttp.ClientSession() as session:
            async with session.post(info["token_uri"], data=grant(assertion)) as response:
                assert response.status == 200
                token = (await response.json())["access_token"]
            async with session.post(info["token_uri"], data=grant(sign(info, key=foreign_private_key()))) as response:
                assert response.status == 400
            headers = {"Authorization": f"Bearer {token}", "x-goog-user-project": "cli-project"}
            async with session.get(f"{url}/v1beta/tunedModels", headers=headers) as response:
                assert response.status == 200
        process.terminate()
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    output = (stdout + stderr).decode()
    events = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    assert [(line["route"], line["status"]) for line in events if line.get("event") == "request"] == [
        ("oauth2.token", "200"),
        ("oauth2.token", "400"),
        ("tunedModels.list", "200"),
    ]
    private_key_body = "".join(info["private_key"].splitlines()[1:-1])
    for secret in (token, assertion, private_key_body[:64], private_key_body[-64:]):
        assert secret not in output


async def test_the_command_reports_a_key_file_it_cannot_write(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tunekeeper",
        "emulator",
        "--port",
        "0",
        "--service-account-file",
        str(tmp_path / "missing-directory" / "key.json"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 1
    assert b"cannot write" in stderr and b"missing-directory" in stderr


async def test_revoked_credentials_are_refused_everywhere_until_restored(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    info = emulator.service_account_info()
    status, answer, _ = await post_token(session, emulator, grant(sign(info)))
    assert status == 200, answer
    token = answer["access_token"]
    gemini_list = f"{emulator.base_url}/v1beta/tunedModels"
    key = {"x-goog-api-key": "some-key"}

    async with aiohttp.ClientSession() as bare:
        status, settings = await call(
            bare, "POST", f"{emulator.base_url}/emulator/faults", {"credentials_revoked": True}
        )
        assert (status, settings["credentials_revoked"]) == (200, True)
        status, refused = await call(bare, "GET", gemini_list, headers=key)
        assert (status, refused["error"]["status"]) == (403, "PERMISSION_DENIED")
        assert refused["error"]["details"][0]["reason"] == "API_KEY_INVALID"
        error = check_bearer(emulator, token)
        assert error is not None and (error.http_code, error.status) == (401, "UNAUTHENTICATED")
        status, answer, _ = await post_token(session, emulator, grant(sign(info)))
        assert (status, answer) == (400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        status, answer = await call(bare, "POST", f"{emulator.base_url}/emulator/faults", {"credentials_revoked": 1})
        assert status == 400  # a flag, nothing else

        emulator.configure(credentials_revoked=False)
        status, _ = await call(bare, "GET", gemini_list, headers=key)
        assert status == 200
        assert check_bearer(emulator, token) is None  # the same token works again
        status, answer, _ = await post_token(session, emulator, grant(sign(info)))
        assert status == 200, answer
