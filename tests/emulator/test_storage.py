"""Cloud Storage's JSON API over raw HTTP: the three upload types, downloads, metadata, lists, deletes, and the
errors in Cloud Storage's own shape (`error.errors[].reason`)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.emulator.conftest import make_config
from tests.waiting import wait_until
from tunekeeper.emulator import Emulator
from tunekeeper.emulator.oauth.tokens import CLOUD_PLATFORM_SCOPE
from tunekeeper.emulator.storage.checksums import crc32c_base64, crc32c_python

BUCKET = "tk-bucket"
TRAINING = b"".join(
    json.dumps({"contents": [{"role": "user", "parts": [{"text": str(i)}]}]}).encode() + b"\n" for i in range(50)
)


def issue_token(emu: Emulator) -> str:
    grant = emu.state.tokens.issue("test@example", frozenset({CLOUD_PLATFORM_SCOPE}), time.time())
    return grant.access_token


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(make_config(buckets=frozenset({BUCKET, "other-bucket"}))) as emu:
        yield emu


@pytest.fixture
async def session(emulator: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {issue_token(emulator)}"}
    async with aiohttp.ClientSession(headers=headers) as client:
        yield client


def object_url(emu: Emulator, name: str, bucket: str = BUCKET) -> str:
    return f"{emu.base_url}/storage/v1/b/{bucket}/o/{quote(name, safe='')}"


def upload_url(emu: Emulator, bucket: str = BUCKET) -> str:
    return f"{emu.base_url}/upload/storage/v1/b/{bucket}/o"


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


async def media_upload(
    session: aiohttp.ClientSession, emu: Emulator, name: str, data: bytes, **params: str
) -> tuple[int, Any]:
    query = {"uploadType": "media", "name": name, **params}
    headers = {"Content-Type": "application/jsonl"}
    async with session.post(upload_url(emu), params=query, data=data, headers=headers) as response:
        return response.status, await response.json()


def multipart_body(metadata: dict[str, Any], data: bytes, boundary: str = "b0und4ry") -> tuple[bytes, str]:
    body = (
        f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode()
        + json.dumps(metadata).encode()
        + f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f'multipart/related; boundary="{boundary}"'


def assert_storage_error(answer: Any, code: int, reason: str) -> None:
    error = answer["error"]
    assert error["code"] == code, answer
    assert error["errors"][0]["reason"] == reason, answer
    assert error["errors"][0]["domain"] == "global"
    assert error["message"] == error["errors"][0]["message"]


async def test_media_upload_then_metadata_and_bytes(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    status, uploaded = await media_upload(session, emulator, "data/train.jsonl", TRAINING)
    assert status == 200, uploaded
    assert uploaded["kind"] == "storage#object"
    assert uploaded["name"] == "data/train.jsonl"
    assert uploaded["bucket"] == BUCKET
    assert uploaded["size"] == str(len(TRAINING))
    assert uploaded["contentType"] == "application/jsonl"
    assert uploaded["md5Hash"] == md5_b64(TRAINING)
    assert uploaded["crc32c"] == crc32c_base64(crc32c_python(TRAINING))
    assert isinstance(uploaded["generation"], str) and int(uploaded["generation"]) > 0
    assert uploaded["metageneration"] == "1"
    assert uploaded["id"] == f"{BUCKET}/data/train.jsonl/{uploaded['generation']}"
    assert uploaded["selfLink"] == object_url(emulator, "data/train.jsonl")

    async with session.get(object_url(emulator, "data/train.jsonl")) as response:
        assert response.status == 200
        assert await response.json() == uploaded

    async with session.get(object_url(emulator, "data/train.jsonl"), params={"alt": "media"}) as response:
        assert response.status == 200
        assert await response.read() == TRAINING
        assert response.headers["Content-Type"] == "application/jsonl"
        hashes = response.headers["x-goog-hash"]
        assert f"md5={md5_b64(TRAINING)}" in hashes and f"crc32c={uploaded['crc32c']}" in hashes
        assert response.headers["x-goog-generation"] == uploaded["generation"]

    async with session.get(uploaded["mediaLink"]) as response:  # /download/storage/v1/...
        assert response.status == 200
        assert await response.read() == TRAINING

    stats = emulator.stats()
    assert stats["storage"][BUCKET] == {"objects": 1, "bytes": len(TRAINING)}
    assert emulator.state.storage.read_uri(f"gs://{BUCKET}/data/train.jsonl").data == TRAINING


async def test_range_download(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    await media_upload(session, emulator, "r", b"0123456789")
    url = object_url(emulator, "r")
    async with session.get(url, params={"alt": "media"}, headers={"Range": "bytes=2-4"}) as response:
        assert response.status == 206
        assert await response.read() == b"234"
        assert response.headers["Content-Range"] == "bytes 2-4/10"
    async with session.get(url, params={"alt": "media"}, headers={"Range": "bytes=-3"}) as response:
        assert await response.read() == b"789"
    async with session.get(url, params={"alt": "media"}, headers={"Range": "bytes=10-"}) as response:
        assert response.status == 416
        assert_storage_error(await response.json(), 416, "requestedRangeNotSatisfiable")


async def test_multipart_upload_keeps_metadata(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    data = b"\r\n--not-the-boundary\r\n\x00\xff binary" * 100
    metadata = {
        "name": "multi/part.bin",
        "contentType": "application/x-test",
        "metadata": {"tunekeeper-job": "42"},
        "cacheControl": "no-cache",
        "md5Hash": md5_b64(data),
        "crc32c": crc32c_base64(crc32c_python(data)),
    }
    body, content_type = multipart_body(metadata, data)
    params = {"uploadType": "multipart", "projection": "noAcl", "userProject": "p", "predefinedAcl": "private"}
    async with session.post(
        upload_url(emulator), params=params, data=body, headers={"Content-Type": content_type}
    ) as r:
        assert r.status == 200, await r.text()
        uploaded = await r.json()
    assert uploaded["name"] == "multi/part.bin"
    assert uploaded["contentType"] == "application/x-test"
    assert uploaded["metadata"] == {"tunekeeper-job": "42"}
    assert uploaded["cacheControl"] == "no-cache"
    assert uploaded["size"] == str(len(data))
    async with session.get(object_url(emulator, "multi/part.bin"), params={"alt": "media"}) as response:
        assert await response.read() == data


@pytest.mark.parametrize("field", ["md5Hash", "crc32c"])
async def test_multipart_checksum_mismatch_is_400(
    emulator: Emulator, session: aiohttp.ClientSession, field: str
) -> None:
    wrong = {"md5Hash": md5_b64(b"other"), "crc32c": crc32c_base64(crc32c_python(b"other"))}[field]
    body, content_type = multipart_body({"name": "bad", field: wrong}, b"the data")
    params = {"uploadType": "multipart"}
    async with session.post(
        upload_url(emulator), params=params, data=body, headers={"Content-Type": content_type}
    ) as r:
        assert r.status == 400
        answer = await r.json()
    assert_storage_error(answer, 400, "invalid")
    assert "doesn't match calculated" in answer["error"]["message"]
    assert emulator.state.storage.find(BUCKET, "bad") is None


async def test_resumable_upload_in_chunks(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    data = bytes(range(256)) * 1024 * 3  # 768 KiB, three chunks of 256 KiB
    headers = {"X-Upload-Content-Type": "application/jsonl", "X-Upload-Content-Length": str(len(data))}
    async with session.post(
        upload_url(emulator),
        params={"uploadType": "resumable"},
        json={"name": "big/train.jsonl", "metadata": {"k": "v"}},
        headers=headers,
    ) as response:
        assert response.status == 200, await response.text()
        location = response.headers["Location"]
    assert location.startswith(f"{emulator.base_url}/upload/storage/v1/b/{BUCKET}/o?uploadType=resumable")
    assert "upload_id=" in location

    async with session.put(location, headers={"Content-Range": f"bytes */{len(data)}"}) as response:
        assert response.status == 308  # nothing received yet
        assert "Range" not in response.headers

    chunk = 256 * 1024
    for start in range(0, len(data) - chunk, chunk):
        part = data[start : start + chunk]
        content_range = f"bytes {start}-{start + chunk - 1}/*"
        async with session.put(location, data=part, headers={"Content-Range": content_range}) as response:
            assert response.status == 308
            assert response.headers["Range"] == f"bytes=0-{start + chunk - 1}"

    async with session.put(location, headers={"Content-Range": "bytes */*"}) as response:
        assert response.status == 308
        assert response.headers["Range"] == f"bytes=0-{2 * chunk - 1}"

    # A retried chunk that overlaps what arrived is fine; the last one finishes the upload.
    last = f"bytes {chunk}-{len(data) - 1}/{len(data)}"
    async with session.put(location, data=data[chunk:], headers={"Content-Range": last}) as response:
        assert response.status == 200, await response.text()
        uploaded = await response.json()
    assert uploaded["size"] == str(len(data))
    assert uploaded["contentType"] == "application/jsonl"
    assert uploaded["metadata"] == {"k": "v"}
    assert uploaded["crc32c"] == crc32c_base64(crc32c_python(data))
    assert emulator.state.storage.get(BUCKET, "big/train.jsonl").data == data

    async with session.put(location, headers={"Content-Range": f"bytes */{len(data)}"}) as response:
        assert response.status == 200  # a finished session answers the object again
        assert (await response.json())["generation"] == uploaded["generation"]


async def test_resumable_upload_in_one_put_and_cancel(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    async def start(name: str) -> str:
        params = {"uploadType": "resumable", "name": name}
        async with session.post(upload_url(emulator), params=params) as response:
            assert response.status == 200
            return response.headers["Location"]

    location = await start("one-shot")
    async with session.put(location, data=b"all of it") as response:  # gcloud-aio-storage: no Content-Range
        assert response.status == 200
        assert (await response.json())["size"] == "9"

    doomed = await start("cancelled")
    async with session.delete(doomed) as response:
        assert response.status == 499
    async with session.put(doomed, data=b"late") as response:
        assert response.status == 404
        assert_storage_error(await response.json(), 404, "notFound")
    assert emulator.state.storage.find(BUCKET, "cancelled") is None


async def test_resumable_final_hash_header_mismatch(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    params = {"uploadType": "resumable", "name": "hashed"}
    async with session.post(upload_url(emulator), params=params) as response:
        location = response.headers["Location"]
    wrong = crc32c_base64(crc32c_python(b"something else"))
    headers = {"Content-Range": "bytes 0-3/4", "x-goog-hash": f"crc32c={wrong}"}
    async with session.put(location, data=b"data", headers=headers) as response:
        assert response.status == 400
        assert_storage_error(await response.json(), 400, "invalid")
    assert emulator.state.storage.find(BUCKET, "hashed") is None


async def test_if_generation_match(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    status, first = await media_upload(session, emulator, "guarded", b"v1", ifGenerationMatch="0")
    assert status == 200
    status, answer = await media_upload(session, emulator, "guarded", b"v2", ifGenerationMatch="0")
    assert status == 412
    assert_storage_error(answer, 412, "conditionNotMet")
    status, second = await media_upload(session, emulator, "guarded", b"v2", ifGenerationMatch=first["generation"])
    assert status == 200
    assert int(second["generation"]) > int(first["generation"])
    async with session.delete(object_url(emulator, "guarded"), params={"ifGenerationMatch": first["generation"]}) as r:
        assert r.status == 412
    async with session.get(object_url(emulator, "guarded"), params={"generation": first["generation"]}) as r:
        assert r.status == 404  # only the live generation is kept
    async with session.get(object_url(emulator, "guarded"), params={"ifGenerationNotMatch": second["generation"]}) as r:
        assert r.status == 304
        assert await r.read() == b""
    # A resumable upload meets its precondition when it starts, before any bytes are sent.
    params = {"uploadType": "resumable", "name": "guarded", "ifGenerationMatch": "0"}
    async with session.post(upload_url(emulator), params=params) as r:
        assert r.status == 412
        assert_storage_error(await r.json(), 412, "conditionNotMet")
    assert len(emulator.state.storage.uploads) == 0


async def test_list_with_prefix_delimiter_and_pages(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    names = ["a/1", "a/2", "a/sub/3", "a/sub/4", "a/z", "b/1", "top"]
    for name in reversed(names):
        status, _ = await media_upload(session, emulator, name, name.encode())
        assert status == 200
    url = f"{emulator.base_url}/storage/v1/b/{BUCKET}/o"

    async def list_all(**params: str) -> tuple[list[str], list[str], int]:
        items: list[str] = []
        prefixes: list[str] = []
        pages = 0
        token = None
        while True:
            query = {**params, **({"pageToken": token} if token else {})}
            async with session.get(url, params=query) as response:
                assert response.status == 200
                page = await response.json()
            assert page["kind"] == "storage#objects"
            pages += 1
            items += [item["name"] for item in page.get("items", [])]
            prefixes += page.get("prefixes", [])
            token = page.get("nextPageToken")
            if not token:
                return items, prefixes, pages

    assert await list_all() == (names, [], 1)
    assert await list_all(maxResults="2") == (names, [], 4)
    assert await list_all(prefix="a/") == (["a/1", "a/2", "a/sub/3", "a/sub/4", "a/z"], [], 1)
    assert await list_all(prefix="a/", delimiter="/") == (["a/1", "a/2", "a/z"], ["a/sub/"], 1)
    # A prefix counts as one entry of a page, and is served once across pages.
    assert await list_all(prefix="a/", delimiter="/", maxResults="1") == (["a/1", "a/2", "a/z"], ["a/sub/"], 4)
    assert await list_all(delimiter="/") == (["top"], ["a/", "b/"], 1)
    assert await list_all(startOffset="a/sub", endOffset="b/") == (["a/sub/3", "a/sub/4", "a/z"], [], 1)

    async with session.get(url, params={"prefix": "nothing/"}) as response:
        assert await response.json() == {"kind": "storage#objects"}

    # A token only works with the list parameters that produced it.
    async with session.get(url, params={"maxResults": "1"}) as response:
        token = (await response.json())["nextPageToken"]
    async with session.get(url, params={"pageToken": token, "prefix": "a/"}) as response:
        assert response.status == 400
        assert_storage_error(await response.json(), 400, "invalid")

    async with session.get(url, params={"fields": "items(name),nextPageToken", "maxResults": "1"}) as response:
        page = await response.json()
    assert page["items"] == [{"name": "a/1"}]
    assert set(page) == {"items", "nextPageToken"}


async def test_list_pages_are_stable_while_objects_change(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    for name in ["k1", "k2", "k3", "k4"]:
        await media_upload(session, emulator, name, b"x")
    url = f"{emulator.base_url}/storage/v1/b/{BUCKET}/o"
    async with session.get(url, params={"maxResults": "2"}) as response:
        first = await response.json()
    await media_upload(session, emulator, "k0", b"x")  # sorts before the token: not served now
    async with session.delete(object_url(emulator, "k2")) as response:
        assert response.status == 204
    async with session.get(url, params={"maxResults": "2", "pageToken": first["nextPageToken"]}) as response:
        second = await response.json()
    assert [item["name"] for item in first["items"] + second["items"]] == ["k1", "k2", "k3", "k4"]


async def test_delete(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    await media_upload(session, emulator, "gone soon", b"x")
    async with session.delete(object_url(emulator, "gone soon")) as response:
        assert response.status == 204
        assert await response.read() == b""
    async with session.delete(object_url(emulator, "gone soon")) as response:
        assert response.status == 404
        answer = await response.json()
    assert_storage_error(answer, 404, "notFound")
    assert answer["error"]["message"] == f"No such object: {BUCKET}/gone soon"
    assert emulator.stats()["storage"][BUCKET] == {"objects": 0, "bytes": 0}


async def test_bucket_resource(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{emulator.base_url}/storage/v1/b/{BUCKET}") as response:
        assert response.status == 200
        bucket = await response.json()
    assert bucket["kind"] == "storage#bucket"
    assert bucket["id"] == bucket["name"] == BUCKET
    assert {"location", "storageClass", "timeCreated", "updated", "metageneration", "etag", "projectNumber"} <= set(
        bucket
    )


async def test_unknown_bucket_and_missing_object_are_404(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{emulator.base_url}/storage/v1/b/no-such-bucket") as response:
        assert response.status == 404
        assert_storage_error(await response.json(), 404, "notFound")
    async with session.get(object_url(emulator, "x", bucket="no-such-bucket")) as response:
        assert response.status == 404
    status, answer = await media_upload(session, emulator, "x", b"x")
    assert status == 200
    async with session.post(
        upload_url(emulator, "no-such-bucket"), params={"uploadType": "media", "name": "x"}, data=b"x"
    ) as response:
        assert response.status == 404
        assert_storage_error(await response.json(), 404, "notFound")
    async with session.get(object_url(emulator, "missing.jsonl"), params={"alt": "media"}) as response:
        assert response.status == 404
        answer = await response.json()
    assert answer["error"]["message"] == f"No such object: {BUCKET}/missing.jsonl"


async def test_object_names_keep_encoded_slashes_and_spaces(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    name = "dir/sub dir/ü+%.jsonl"
    status, uploaded = await media_upload(session, emulator, name, b"odd")
    assert status == 200 and uploaded["name"] == name
    async with session.get(object_url(emulator, name), params={"alt": "media"}) as response:
        assert await response.read() == b"odd"


async def test_upload_needs_a_name_and_a_known_upload_type(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    async with session.post(upload_url(emulator), params={"uploadType": "media"}, data=b"x") as response:
        assert response.status == 400
        assert_storage_error(await response.json(), 400, "required")
    async with session.post(upload_url(emulator), params={"uploadType": "chunked", "name": "x"}) as response:
        assert response.status == 400
        assert_storage_error(await response.json(), 400, "invalid")


async def test_no_token_is_401(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(object_url(emulator, "x")) as response:
            assert response.status == 401
            assert_storage_error(await response.json(), 401, "required")
        async with anonymous.get(
            f"{emulator.base_url}/storage/v1/b/{BUCKET}", headers={"Authorization": "Bearer ya29.made-up"}
        ) as response:
            assert response.status == 401
            answer = await response.json()
    assert_storage_error(answer, 401, "authError")
    assert "ya29.made-up" not in json.dumps(answer)


async def test_expired_token_is_401() -> None:
    async with Emulator(make_config(buckets=frozenset({BUCKET}), token_lifetime=0.2)) as emu:
        headers = {"Authorization": f"Bearer {issue_token(emu)}"}
        url = f"{emu.base_url}/storage/v1/b/{BUCKET}"
        async with aiohttp.ClientSession(headers=headers) as client:
            async with client.get(url) as response:
                assert response.status == 200

            async def rejected() -> Any:
                async with client.get(url) as response:
                    return await response.json() if response.status == 401 else None

            answer = await wait_until(rejected, within=10.0, message="the token to expire")
    assert_storage_error(answer, 401, "authError")


async def test_anonymous_storage_accepts_no_token_but_checks_one_sent() -> None:
    async with (
        Emulator(make_config(buckets=frozenset({BUCKET}), anonymous_storage=True)) as emu,
        aiohttp.ClientSession() as anonymous,
    ):
        url = f"{emu.base_url}/upload/storage/v1/b/{BUCKET}/o"
        async with anonymous.post(url, params={"uploadType": "media", "name": "anon"}, data=b"hi") as response:
            assert response.status == 200
        async with anonymous.get(object_url(emu, "anon"), headers={"Authorization": "Bearer ya29.made-up"}) as response:
            assert response.status == 401


async def test_injected_faults_answer_in_storage_shape(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.set_faults({"503": 1.0})
    async with session.get(f"{emulator.base_url}/storage/v1/b/{BUCKET}") as response:
        assert response.status == 503
        assert_storage_error(await response.json(), 503, "backendError")
    stats = emulator.stats()
    assert stats["requests"]["by_route_status"]["storage.buckets.get"] == {"503": 1}


async def test_malformed_multipart_is_400(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    body, content_type = multipart_body({"name": "m"}, b"data")
    params = {"uploadType": "multipart"}
    cases = [
        (body[: -len(b"--b0und4ry--\r\n")], content_type),  # no closing boundary
        (body, "multipart/related"),  # no boundary parameter
        (body, "application/json"),
    ]
    for data, declared in cases:
        headers = {"Content-Type": declared}
        async with session.post(upload_url(emulator), params=params, data=data, headers=headers) as r:
            assert r.status == 400, declared
            assert_storage_error(await r.json(), 400, "invalid")
    # An unquoted boundary and bare line feeds are read all the same.
    lf_body = b"--xyz\nContent-Type: application/json\n\n" + b'{"name": "lf"}' + b"\n--xyz\n\nraw bytes\n--xyz--"
    lf_headers = {"Content-Type": "multipart/related; boundary=xyz"}
    async with session.post(upload_url(emulator), params=params, data=lf_body, headers=lf_headers) as r:
        assert r.status == 200, await r.text()
    assert emulator.state.storage.get(BUCKET, "lf").data == b"raw bytes"
    assert emulator.state.storage.get(BUCKET, "lf").content_type == "application/octet-stream"


async def test_command_line_buckets_and_anonymous_storage() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tunekeeper",
        "emulator",
        "--port",
        "0",
        "--bucket",
        "cli-bucket",
        "--anonymous-storage",
        "--quiet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        url = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as anonymous:
            params = {"uploadType": "media", "name": "hello.txt"}
            async with anonymous.post(f"{url}/upload/storage/v1/b/cli-bucket/o", params=params, data=b"hi") as r:
                assert r.status == 200
            async with anonymous.get(f"{url}/storage/v1/b/other/o/hello.txt") as response:
                assert response.status == 404
            async with anonymous.get(f"{url}/emulator/stats") as response:
                assert (await response.json())["storage"] == {"cli-bucket": {"objects": 1, "bytes": 2}}
        process.terminate()
        await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
