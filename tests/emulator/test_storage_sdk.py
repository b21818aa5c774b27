"""Google's own storage clients, unchanged, against the emulator through `STORAGE_EMULATOR_HOST`.

google-cloud-storage is synchronous: its calls run in a thread while the emulator serves on the test's loop. It
uploads up to 8 MiB as multipart and more as a resumable upload, checks the CRC32C of what it uploads against
the answer and of what it downloads against `x-goog-hash`. gcloud-aio-storage sends no token under
`STORAGE_EMULATOR_HOST`, hence `anonymous_storage`; given `api_root` and `api_is_dev=False` it sends one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from gcloud.aio import storage as aio_storage
from google.auth import credentials as auth_credentials
from google.auth import exceptions as auth_exceptions
from google.cloud import exceptions as cloud_exceptions
from google.cloud import storage
from google.oauth2 import credentials as credentials_module

from tests.emulator.conftest import make_config
from tunekeeper.emulator import Emulator
from tunekeeper.emulator.oauth.tokens import CLOUD_PLATFORM_SCOPE

BUCKET = "tk-sdk"
PROJECT = "tk-project"
SMALL = b'{"contents": [{"role": "user", "parts": [{"text": "1"}]}]}\n' * 20
BIG = bytes(range(256)) * (9 * 4096 + 17)  # a little over 9 MiB: a resumable upload


def issue_token(emu: Emulator) -> str:
    return emu.state.tokens.issue("sdk@example", frozenset({CLOUD_PLATFORM_SCOPE}), time.time()).access_token


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    async with Emulator(make_config(buckets=frozenset({BUCKET}))) as emu:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emu.base_url)
        yield emu


async def test_google_cloud_storage_round_trip(emulator: Emulator) -> None:
    token = issue_token(emulator)

    def scenario() -> None:
        client = storage.Client(project=PROJECT, credentials=credentials_module.Credentials(token))
        bucket = client.get_bucket(BUCKET)
        assert bucket.name == BUCKET

        small = bucket.blob("runs/1/train.jsonl")
        small.upload_from_string(SMALL, content_type="application/jsonl")  # multipart
        assert small.size == len(SMALL)
        assert small.generation is not None

        big = bucket.blob("runs/1/big.bin")
        big.upload_from_string(BIG)  # resumable, one PUT
        assert big.size == len(BIG)

        chunked = bucket.blob("runs/2/chunked.bin", chunk_size=4 * 1024 * 1024)
        chunked.upload_from_string(BIG)  # resumable, three PUTs of 4 MiB, 4 MiB and the rest

        assert bucket.blob("runs/1/train.jsonl").download_as_bytes() == SMALL
        assert bucket.blob("runs/1/big.bin").download_as_bytes() == BIG
        assert bucket.blob("runs/2/chunked.bin").download_as_bytes() == BIG
        assert bucket.blob("runs/1/big.bin").download_as_bytes(start=10, end=19) == BIG[10:20]

        fetched = bucket.get_blob("runs/1/train.jsonl")
        assert fetched is not None
        assert fetched.content_type == "application/jsonl"
        assert fetched.md5_hash == small.md5_hash

        listed = [blob.name for blob in client.list_blobs(BUCKET, prefix="runs/1/")]
        assert listed == ["runs/1/big.bin", "runs/1/train.jsonl"]
        paged = [blob.name for blob in client.list_blobs(BUCKET, max_results=10, page_size=1)]
        assert paged == ["runs/1/big.bin", "runs/1/train.jsonl", "runs/2/chunked.bin"]
        iterator = client.list_blobs(BUCKET, delimiter="/", prefix="runs/")
        assert list(iterator) == []
        assert iterator.prefixes == {"runs/1/", "runs/2/"}

        bucket.blob("runs/1/big.bin").delete()
        assert not bucket.blob("runs/1/big.bin").exists()
        with pytest.raises(cloud_exceptions.NotFound):
            bucket.blob("runs/1/big.bin").download_as_bytes()
        with pytest.raises(cloud_exceptions.NotFound):
            client.get_bucket("no-such-bucket")
        with pytest.raises(cloud_exceptions.PreconditionFailed):
            bucket.blob("runs/1/train.jsonl").upload_from_string(b"again", if_generation_match=0)

    await asyncio.to_thread(scenario)
    assert emulator.state.storage.get(BUCKET, "runs/2/chunked.bin").data == BIG
    routes = emulator.stats()["requests"]["by_route"]
    # multipart, resumable start + one PUT, chunked start + three PUTs, the refused multipart
    assert routes["storage.objects.insert"] == 8


async def test_google_cloud_storage_without_token_is_unauthorized(emulator: Emulator) -> None:
    def scenario() -> None:
        client = storage.Client(project=PROJECT, credentials=auth_credentials.AnonymousCredentials())
        # On a 401 the client's transport refreshes its credentials and retries; anonymous ones cannot refresh.
        with pytest.raises(auth_exceptions.InvalidOperation):
            client.bucket(BUCKET).blob("x").upload_from_string(b"x")

    await asyncio.to_thread(scenario)
    assert emulator.state.storage.find(BUCKET, "x") is None
    assert emulator.stats()["requests"]["by_route_status"]["storage.objects.insert"] == {"401": 1}


async def test_google_cloud_storage_anonymous(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Emulator(make_config(buckets=frozenset({BUCKET}), anonymous_storage=True)) as emu:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emu.base_url)

        def scenario() -> bytes:
            client = storage.Client(project=PROJECT, credentials=auth_credentials.AnonymousCredentials())
            blob = client.bucket(BUCKET).blob("anon.jsonl")
            blob.upload_from_string(SMALL)
            data: bytes = blob.download_as_bytes()
            return data

        assert await asyncio.to_thread(scenario) == SMALL


async def test_gcloud_aio_storage_anonymous(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Emulator(make_config(buckets=frozenset({BUCKET}), anonymous_storage=True)) as emu:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emu.base_url)
        async with aio_storage.Storage() as client:
            simple = await client.upload(BUCKET, "aio/train.jsonl", SMALL)  # uploadType=media
            assert simple["size"] == str(len(SMALL))
            tagged = await client.upload(BUCKET, "aio/tagged.jsonl", SMALL, metadata={"metadata": {"job": "7"}})
            assert tagged["metadata"] == {"job": "7"}  # multipart
            big = await client.upload(BUCKET, "aio/big.bin", BIG[: 6 * 1024 * 1024])  # resumable above 5 MB
            assert big["size"] == str(6 * 1024 * 1024)
            assert await client.download(BUCKET, "aio/train.jsonl") == SMALL
            assert await client.download(BUCKET, "aio/big.bin") == BIG[: 6 * 1024 * 1024]
            metadata = await client.download_metadata(BUCKET, "aio/tagged.jsonl")
            assert metadata["metadata"] == {"job": "7"}
            listed = await client.list_objects(BUCKET, params={"prefix": "aio/"})
            assert [item["name"] for item in listed["items"]] == ["aio/big.bin", "aio/tagged.jsonl", "aio/train.jsonl"]
            await client.delete(BUCKET, "aio/big.bin")
            assert emu.state.storage.find(BUCKET, "aio/big.bin") is None


class FixedToken:
    """A token source that hands out one access token (gcloud-aio-storage calls `await token.get()`)."""

    def __init__(self, access_token: str) -> None:
        self.access_token = access_token

    async def get(self) -> str:
        return self.access_token


async def test_gcloud_aio_storage_sends_a_token_with_api_root(emulator: Emulator) -> None:
    token = FixedToken(issue_token(emulator))
    async with aio_storage.Storage(api_root=emulator.base_url, api_is_dev=False, token=token) as client:
        await client.upload(BUCKET, "aio/authed.txt", b"with a token")
        assert await client.download(BUCKET, "aio/authed.txt") == b"with a token"
