"""Buckets and objects as Cloud Storage's JSON API renders them, and the `fields` partial response.

int64 fields (`size`, `generation`, `metageneration`) are JSON strings, as in Google's answers; checksums are
base64 (CRC32C as 4 big-endian bytes).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from tunekeeper.emulator.storage.checksums import crc32c_base64, md5_base64
from tunekeeper.emulator.storage.errors import invalid
from tunekeeper.emulator.storage.objects import StoredObject
from tunekeeper.emulator.timestamps import rfc3339

PROJECT_NUMBER = "123456789012"  # a stand-in: the emulator has no projects
LOCATION = "US"
STORAGE_CLASS = "STANDARD"


def encoded_name(name: str) -> str:
    return quote(name, safe="")


def object_etag(stored: StoredObject) -> str:
    # Google's etags are opaque base64; this one changes whenever the generation or metageneration does.
    return base64.b64encode(f"{stored.generation}/{stored.metageneration}".encode()).decode()


def object_json(stored: StoredObject, base_url: str) -> dict[str, Any]:
    path = f"b/{stored.bucket}/o/{encoded_name(stored.name)}"
    resource: dict[str, Any] = {
        "kind": "storage#object",
        "id": f"{stored.bucket}/{stored.name}/{stored.generation}",
        "selfLink": f"{base_url}/storage/v1/{path}",
        "mediaLink": f"{base_url}/download/storage/v1/{path}?generation={stored.generation}&alt=media",
        "name": stored.name,
        "bucket": stored.bucket,
        "generation": str(stored.generation),
        "metageneration": str(stored.metageneration),
        "contentType": stored.content_type,
        "storageClass": STORAGE_CLASS,
        "size": str(stored.size),
        "md5Hash": md5_base64(stored.md5),
        "crc32c": crc32c_base64(stored.crc32c or 0),
        "etag": object_etag(stored),
        "timeCreated": rfc3339(stored.created_at),
        "updated": rfc3339(stored.created_at),
        "timeStorageClassUpdated": rfc3339(stored.created_at),
        "timeFinalized": rfc3339(stored.created_at),
    }
    resource.update(stored.properties)
    if stored.metadata:
        resource["metadata"] = dict(stored.metadata)
    return resource


def bucket_json(name: str, created_at: float, base_url: str) -> dict[str, Any]:
    created = rfc3339(created_at)
    return {
        "kind": "storage#bucket",
        "selfLink": f"{base_url}/storage/v1/b/{name}",
        "id": name,
        "name": name,
        "projectNumber": PROJECT_NUMBER,
        "metageneration": "1",
        "location": LOCATION,
        "locationType": "multi-region",
        "storageClass": STORAGE_CLASS,
        "etag": "CAE=",
        "timeCreated": created,
        "updated": created,
        "iamConfiguration": {
            "bucketPolicyOnly": {"enabled": True},
            "uniformBucketLevelAccess": {"enabled": True},
            "publicAccessPrevention": "inherited",
        },
        "rpo": "DEFAULT",
    }


# A `fields` selection: field name -> the selection inside it (None: the whole value).
Selection = dict[str, "Selection | None"]


def parse_fields(text: str) -> Selection:
    """`fields=items(name,size),nextPageToken` or `fields=name,metadata/key` (Google's partial response syntax)."""
    selection, rest = _parse_list(text.replace(" ", ""), 0)
    if rest != len(text.replace(" ", "")):
        raise invalid(f"Invalid field selection {text!r}.")
    return selection


def _parse_list(text: str, index: int) -> tuple[Selection, int]:
    selection: Selection = {}
    while index < len(text):
        start = index
        while index < len(text) and text[index] not in ",()/":
            index += 1
        name = text[start:index]
        if not name:
            raise invalid(f"Invalid field selection {text!r}.")
        inner: Selection | None = None
        if index < len(text) and text[index] == "(":
            inner, index = _parse_list(text, index + 1)
            if index >= len(text) or text[index] != ")":
                raise invalid(f"Invalid field selection {text!r}: unbalanced parentheses.")
            index += 1
        elif index < len(text) and text[index] == "/":
            inner, index = _parse_path(text, index + 1)
        _merge(selection, name, inner)
        if index < len(text) and text[index] == ",":
            index += 1
            continue
        break
    return selection, index


def _parse_path(text: str, index: int) -> tuple[Selection, int]:
    """`a/b/c`: the part after a `/`, up to the next `,` or `)`."""
    start = index
    while index < len(text) and text[index] not in ",()/":
        index += 1
    name = text[start:index]
    if not name:
        raise invalid(f"Invalid field selection {text!r}.")
    inner: Selection | None = None
    if index < len(text) and text[index] == "/":
        inner, index = _parse_path(text, index + 1)
    elif index < len(text) and text[index] == "(":
        inner, index = _parse_list(text, index + 1)
        if index >= len(text) or text[index] != ")":
            raise invalid(f"Invalid field selection {text!r}: unbalanced parentheses.")
        index += 1
    return {name: inner}, index


def _merge(selection: Selection, name: str, inner: Selection | None) -> None:
    if name not in selection:
        selection[name] = inner
        return
    existing = selection[name]
    if existing is None or inner is None:
        selection[name] = None  # the whole value wins over a part of it
        return
    for key, value in inner.items():
        _merge(existing, key, value)


def select(value: Any, selection: Selection | None) -> Any:
    """`value` cut down to `selection`; lists are cut element by element."""
    if selection is None:
        return value
    if isinstance(value, list):
        return [select(item, selection) for item in value]
    if not isinstance(value, dict):
        return value
    return {key: select(value[key], inner) for key, inner in selection.items() if key in value}
