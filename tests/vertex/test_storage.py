"""Cloud Storage through the client, against the emulator: upload, stat, delete, names with slashes, errors."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.vertex.conftest import BUCKET
from tunekeeper.backends.googleapi.errors import NotFound
from tunekeeper.backends.vertex.client import VertexClient
from tunekeeper.backends.vertex.storage import parse_gs_uri
from tunekeeper.emulator import Emulator


async def test_upload_then_stat_describes_the_stored_bytes(client: VertexClient, emulator: Emulator) -> None:
    data = b'{"contents": []}\n' * 100
    uri = f"gs://{BUCKET}/runs/7/train data.jsonl"  # a slash and a space: both percent-encoded in paths

    uploaded = await client.storage.upload(uri, data, "application/jsonl")
    stat = await client.storage.stat(uri)

    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert uploaded.uri == uri
    assert (uploaded.size, uploaded.md5_hash, uploaded.content_type) == (len(data), md5, "application/jsonl")
    assert stat == uploaded
    assert uploaded.generation > 0
    assert emulator.state.storage.get(BUCKET, "runs/7/train data.jsonl").data == data


async def test_a_second_upload_replaces_the_object(client: VertexClient) -> None:
    uri = f"gs://{BUCKET}/replaced.jsonl"
    first = await client.storage.upload(uri, b"one\n")
    second = await client.storage.upload(uri, b"two, longer\n")

    stat = await client.storage.stat(uri)
    assert stat is not None
    assert stat.generation == second.generation != first.generation
    assert stat.size == len(b"two, longer\n")


async def test_stat_of_a_missing_object_is_none(client: VertexClient) -> None:
    assert await client.storage.stat(f"gs://{BUCKET}/nothing-here") is None


async def test_delete_removes_and_a_second_delete_is_not_found(client: VertexClient) -> None:
    uri = f"gs://{BUCKET}/a/b/c.jsonl"
    await client.storage.upload(uri, b"x")

    await client.storage.delete(uri)

    assert await client.storage.stat(uri) is None
    with pytest.raises(NotFound) as raised:
        await client.storage.delete(uri)
    assert raised.value.status == "NOT_FOUND"  # Cloud Storage's error shape has no status: taken from the 404
    assert "No such object" in raised.value.message


async def test_upload_to_a_bucket_that_does_not_exist_is_not_found(client: VertexClient) -> None:
    with pytest.raises(NotFound) as raised:
        await client.storage.upload("gs://no-such-bucket/x.jsonl", b"x")
    assert "bucket does not exist" in raised.value.message


@pytest.mark.parametrize(
    "uri",
    ["s3://b/x", "gs://b", "gs://bucket/", "gs://UPPER/x", "gs://bucket/..", "gs://bucket/a\nb", "gs:///x"],
)
def test_unusable_uris_are_refused_before_any_request(uri: str) -> None:
    with pytest.raises(ValueError, match=r"gs://|bucket|object name"):
        parse_gs_uri(uri)


def test_a_gs_uri_splits_at_the_first_slash() -> None:
    assert parse_gs_uri("gs://tk-data/runs/1/train.jsonl") == ("tk-data", "runs/1/train.jsonl")
