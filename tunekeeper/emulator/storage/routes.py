"""Cloud Storage's JSON API: path templates, route names (as in Google's reference) and handlers.

Object names come percent-encoded in the path (`a%2Fb.jsonl`), so routing reads the raw path and decodes the
bucket and object parts itself: the dispatcher's decoded path has already turned `%2F` into `/`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from tunekeeper.emulator.errors import ApiError
from tunekeeper.emulator.jsonbody import parse_lenient
from tunekeeper.emulator.routing import Answer, Authenticator, Call, Handler, Resolved, Route
from tunekeeper.emulator.storage.auth import requiring, session_holder
from tunekeeper.emulator.storage.checksums import crc32c, crc32c_base64, decode_crc32c, decode_md5, md5, md5_base64
from tunekeeper.emulator.storage.errors import (
    StorageError,
    invalid,
    not_found_object,
    required,
    storage_error_body,
)
from tunekeeper.emulator.storage.listing import list_objects
from tunekeeper.emulator.storage.media import media_response
from tunekeeper.emulator.storage.multipart import boundary_of, parse_multipart
from tunekeeper.emulator.storage.objects import StoredObject
from tunekeeper.emulator.storage.preconditions import NotModified, check_preconditions, preconditions_of
from tunekeeper.emulator.storage.resources import (
    bucket_json,
    encoded_name,
    object_etag,
    object_json,
    parse_fields,
    select,
)
from tunekeeper.emulator.storage.uploads import ObjectDraft, parse_content_range

if TYPE_CHECKING:
    from tunekeeper.emulator.state import EmulatorState

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_NAME_BYTES = 1024
# Writable object fields kept as they are sent (besides name, contentType, metadata and the checksums).
_PROPERTIES = ("cacheControl", "contentDisposition", "contentEncoding", "contentLanguage")


# --- answers -----------------------------------------------------------------------------------------------


def _json(call: Call, resource: dict[str, Any]) -> dict[str, Any]:
    """The resource cut down to `fields`, if the client asked for a partial response."""
    fields = call.query.get("fields")
    if not fields:
        return resource
    selected: dict[str, Any] = select(resource, parse_fields(fields))
    return selected


def _bucket_name(call: Call) -> str:
    return call.params["bucket"]


def _live_object(state: EmulatorState, call: Call) -> StoredObject:
    """The object the path names; 404 if there is none, or if `generation` names one no longer live."""
    bucket, name = _bucket_name(call), call.params["object"]
    stored = state.storage.find(bucket, name)
    generation = call.query.get("generation")
    if stored is None or (generation and generation != str(stored.generation)):
        raise not_found_object(bucket, name)
    return stored


def _check_bucket(state: EmulatorState, bucket: str) -> None:
    try:
        state.storage.check_bucket(bucket)
    except ApiError:
        raise StorageError(404, "notFound", "The specified bucket does not exist.") from None


# --- buckets and objects -----------------------------------------------------------------------------------


def get_bucket(state: EmulatorState, call: Call) -> Answer:
    bucket = _bucket_name(call)
    _check_bucket(state, bucket)
    return _json(call, bucket_json(bucket, state.storage.created_at, call.base_url))


def _readable(state: EmulatorState, call: Call) -> StoredObject | web.Response:
    """The object a read names, or the 304 answer its "not match" preconditions call for."""
    _check_bucket(state, _bucket_name(call))
    stored = _live_object(state, call)
    try:
        check_preconditions(call.query, stored, read=True)
    except NotModified:
        return web.Response(status=304, headers={"ETag": object_etag(stored)})
    return stored


def get_object(state: EmulatorState, call: Call) -> Answer:
    stored = _readable(state, call)
    if isinstance(stored, web.Response):
        return stored
    if call.query.get("alt") == "media":
        return media_response(stored, call.headers.get("Range"))
    return _json(call, object_json(stored, call.base_url))


def download_object(state: EmulatorState, call: Call) -> Answer:
    """`/download/storage/v1/...`: where google-cloud-storage downloads; always the bytes."""
    stored = _readable(state, call)
    if isinstance(stored, web.Response):
        return stored
    return media_response(stored, call.headers.get("Range"))


def delete_object(state: EmulatorState, call: Call) -> Answer:
    _check_bucket(state, _bucket_name(call))
    stored = _live_object(state, call)
    check_preconditions(call.query, stored)
    state.storage.delete(stored.bucket, stored.name)
    return web.Response(status=204)


def list_bucket_objects(state: EmulatorState, call: Call) -> Answer:
    bucket = _bucket_name(call)
    _check_bucket(state, bucket)
    if call.query.get("matchGlob"):
        raise invalid("matchGlob is not supported by this emulator; use prefix and delimiter.")
    listing = list_objects(state.storage.list(bucket, call.query.get("prefix", "")), call.query)
    body: dict[str, Any] = {"kind": "storage#objects"}
    if listing.prefixes:
        body["prefixes"] = listing.prefixes
    if listing.items:
        body["items"] = [object_json(stored, call.base_url) for stored in listing.items]
    if listing.next_token:
        body["nextPageToken"] = listing.next_token
    return _json(call, body)


# --- uploads -----------------------------------------------------------------------------------------------


def _metadata_json(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    value = parse_lenient(raw)
    if not isinstance(value, dict):
        raise invalid("The object's metadata must be a JSON object.")
    return value


def _object_name(resource: Mapping[str, Any], query: Mapping[str, str]) -> str:
    """The name in the metadata, else the `name` query parameter (the metadata wins when both are given)."""
    name = resource.get("name") or query.get("name")
    if not name:
        raise required("name")
    if not isinstance(name, str):
        raise invalid("The object's name must be a string.")
    if len(name.encode()) > MAX_NAME_BYTES or name in {".", ".."} or "\r" in name or "\n" in name:
        raise invalid(f"The object name {name!r} is not valid: 1-1024 bytes of UTF-8, no CR or LF, not . or ..")
    return name


def _custom_metadata(resource: Mapping[str, Any]) -> dict[str, str]:
    metadata = resource.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise invalid("The object's metadata field must be an object of strings.")
    result: dict[str, str] = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise invalid(f"Custom metadata value for {key!r} must be a string.")
        result[str(key)] = value
    return result


def _properties(resource: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(resource[key]) for key in _PROPERTIES if resource.get(key) is not None}


def _verify_checksums(data: bytes, crc: int, md5_hash: str | None, crc32c_text: str | None) -> None:
    """A checksum the client sent must match the data, or the upload fails with 400 as at Google."""
    if md5_hash is not None:
        expected_md5 = decode_md5(md5_hash)
        if expected_md5 is None:
            raise invalid(f"Invalid md5Hash {md5_hash!r}: expected 16 bytes in base64.")
        if expected_md5 != md5(data):
            raise invalid(
                f'Provided MD5 hash "{md5_hash}" doesn\'t match calculated MD5 hash "{md5_base64(md5(data))}".'
            )
    if crc32c_text is not None:
        expected_crc = decode_crc32c(crc32c_text)
        if expected_crc is None:
            raise invalid(f"Invalid crc32c {crc32c_text!r}: expected 4 bytes in base64.")
        if expected_crc != crc:
            raise invalid(f'Provided CRC32C "{crc32c_text}" doesn\'t match calculated CRC32C "{crc32c_base64(crc)}".')


def _hash_header(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(md5, crc32c) from an `x-goog-hash: crc32c=...,md5=...` header."""
    found: dict[str, str] = {}
    for item in headers.get("x-goog-hash", "").split(","):
        kind, equals, value = item.strip().partition("=")
        if equals:
            found[kind.strip().lower()] = value.strip()
    return found.get("md5"), found.get("crc32c")


def _checksums(resource: Mapping[str, Any]) -> tuple[str | None, str | None]:
    md5_hash, crc32c_text = resource.get("md5Hash"), resource.get("crc32c")
    if md5_hash is not None and not isinstance(md5_hash, str):
        raise invalid("md5Hash must be a base64 string.")
    if crc32c_text is not None and not isinstance(crc32c_text, str):
        raise invalid("crc32c must be a base64 string.")
    return md5_hash, crc32c_text


def _store(state: EmulatorState, call: Call, draft: ObjectDraft, data: bytes, crc: int | None = None) -> StoredObject:
    """Checksums, size, preconditions, then the write: the end of every kind of upload."""
    crc = crc32c(data, 0) if crc is None else crc
    _verify_checksums(data, crc, draft.expected_md5, draft.expected_crc32c)
    header_md5, header_crc = _hash_header(call.headers)
    _verify_checksums(data, crc, header_md5, header_crc)
    if draft.declared_size is not None and draft.declared_size != len(data):
        raise invalid(f"The upload declared {draft.declared_size} bytes (X-Upload-Content-Length), got {len(data)}.")
    check_preconditions(draft.preconditions, state.storage.find(draft.bucket, draft.name))
    return state.storage.put(
        draft.bucket,
        draft.name,
        data,
        call.now,
        draft.content_type,
        draft.metadata,
        properties=draft.properties,
        data_crc32c=crc,
    )


def _draft(
    bucket: str,
    resource: Mapping[str, Any],
    query: Mapping[str, str],
    content_type: str | None,
    declared_size: int | None = None,
) -> ObjectDraft:
    content_type = resource.get("contentType") or content_type or DEFAULT_CONTENT_TYPE
    if not isinstance(content_type, str):
        raise invalid("contentType must be a string.")
    md5_hash, crc32c_text = _checksums(resource)
    return ObjectDraft(
        bucket=bucket,
        name=_object_name(resource, query),
        content_type=content_type,
        metadata=_custom_metadata(resource),
        properties=_properties(resource),
        expected_md5=md5_hash,
        expected_crc32c=crc32c_text,
        declared_size=declared_size,
        preconditions=preconditions_of(query),
    )


def insert_object(state: EmulatorState, call: Call) -> Answer:
    """`POST /upload/storage/v1/b/{bucket}/o?uploadType=media|multipart|resumable`."""
    bucket = _bucket_name(call)
    _check_bucket(state, bucket)
    upload_type = call.query.get("uploadType")
    if upload_type == "media":
        draft = _draft(bucket, {}, call.query, call.headers.get("Content-Type"))
        return _json(call, object_json(_store(state, call, draft, call.body), call.base_url))
    if upload_type == "multipart":
        parts = parse_multipart(call.body, boundary_of(call.headers.get("Content-Type", "")))
        if len(parts) != 2:
            raise invalid(f"A multipart upload has two parts (metadata, then data), got {len(parts)}.")
        metadata_part, data_part = parts
        resource = _metadata_json(metadata_part.body)
        draft = _draft(bucket, resource, call.query, data_part.headers.get("content-type"))
        return _json(call, object_json(_store(state, call, draft, data_part.body), call.base_url))
    if upload_type == "resumable":
        return _start_resumable(state, call, bucket)
    if upload_type is None:
        raise required("uploadType")
    raise invalid(f"Invalid upload type {upload_type!r}: expected media, multipart or resumable.")


def _start_resumable(state: EmulatorState, call: Call, bucket: str) -> Answer:
    declared = call.headers.get("X-Upload-Content-Length")
    try:
        declared_size = int(declared) if declared else None
    except ValueError:
        raise invalid(f"Invalid X-Upload-Content-Length {declared!r}.") from None
    draft = _draft(
        bucket, _metadata_json(call.body), call.query, call.headers.get("X-Upload-Content-Type"), declared_size
    )
    # Checked now, to spare a doomed upload its bytes, and again when the last byte is in.
    check_preconditions(draft.preconditions, state.storage.find(bucket, draft.name))
    session = state.storage.uploads.start(draft)
    location = (
        f"{call.base_url}/upload/storage/v1/b/{bucket}/o?uploadType=resumable"
        f"&name={encoded_name(draft.name)}&upload_id={session.upload_id}"
    )
    return web.Response(status=200, headers={"Location": location, "X-GUploader-UploadID": session.upload_id})


def _upload_id(call: Call) -> str:
    upload_id = call.query.get("upload_id")
    if not upload_id:
        raise required("upload_id")
    return upload_id


def put_chunk(state: EmulatorState, call: Call) -> Answer:
    """`PUT {session URL}`: bytes at an offset (`Content-Range: bytes a-b/total`), or `bytes */total` to ask how
    much arrived. 308 with `Range: bytes=0-N` until the last byte is in; then the object (200)."""
    uploads = state.storage.uploads
    session = uploads.get(_upload_id(call))
    if session.draft.bucket != _bucket_name(call):
        raise StorageError(404, "notFound", "No such upload session.")
    if session.completed is not None:
        return _json(call, object_json(session.completed, call.base_url))
    chunk = parse_content_range(call.headers.get("Content-Range"), len(call.body))
    session.append(chunk, call.body)
    received = len(session.received)
    if chunk.total is not None and received > chunk.total:
        raise invalid(f"The upload has {received} bytes, more than the declared total {chunk.total}.")
    if chunk.total is None or received < chunk.total:
        return web.Response(status=308, headers=session.range_header())
    try:
        stored = _store(state, call, session.draft, bytes(session.received), session.crc)
    except ApiError:
        uploads.cancel(session.upload_id)  # a failed final check ends the session, as at Google
        raise
    session.completed = stored
    session.received = bytearray()  # the object holds the bytes now
    return _json(call, object_json(stored, call.base_url))


def cancel_upload(state: EmulatorState, call: Call) -> Answer:
    """`DELETE {session URL}`: Google answers 499 (Client Closed Request) and forgets the session."""
    state.storage.uploads.cancel(_upload_id(call))
    return web.Response(status=499, reason="Client Closed Request")


# --- routing -----------------------------------------------------------------------------------------------


def _route(name: str, handler: Handler, authenticate: Authenticator, reads_body: bool = False) -> Route:
    return Route(name, handler, authenticate, reads_body=reads_body, render_error=storage_error_body)


_BUCKET_GET = _route("storage.buckets.get", get_bucket, requiring("storage.buckets.get"))
_OBJECT_GET = _route("storage.objects.get", get_object, requiring("storage.objects.get"))
_OBJECT_DOWNLOAD = _route("storage.objects.get", download_object, requiring("storage.objects.get"))
_OBJECT_DELETE = _route("storage.objects.delete", delete_object, requiring("storage.objects.delete"))
_OBJECT_LIST = _route("storage.objects.list", list_bucket_objects, requiring("storage.objects.list"))
_OBJECT_INSERT = _route("storage.objects.insert", insert_object, requiring("storage.objects.create"), True)
# The session URL is its own credential (Google: requests to it need no Authorization); a token sent is checked.
_UPLOAD_CHUNK = _route("storage.objects.insert", put_chunk, session_holder, True)
_UPLOAD_CANCEL = _route("storage.objects.insert", cancel_upload, session_holder)

# (path kind, HTTP method) -> route. Kinds: "bucket", "objects" (the collection), "object".
_JSON_ROUTES: dict[tuple[str, str], Route] = {
    ("bucket", "GET"): _BUCKET_GET,
    ("objects", "GET"): _OBJECT_LIST,
    ("object", "GET"): _OBJECT_GET,
    ("object", "DELETE"): _OBJECT_DELETE,
}
_UPLOAD_ROUTES: dict[str, Route] = {"POST": _OBJECT_INSERT, "PUT": _UPLOAD_CHUNK, "DELETE": _UPLOAD_CANCEL}

_PATH = re.compile(
    r"^/(?P<service>upload/|download/)?storage/v1/b/(?P<bucket>[^/]+)(?P<objects>/o(?:/(?P<object>.+))?)?$"
)


class StorageSurface:
    """`/storage/v1/b/...`, `/upload/storage/v1/b/...` and `/download/storage/v1/b/...`."""

    def resolve(self, method: str, path: str, raw_path: str) -> Resolved | None:
        match = _PATH.match(raw_path)
        if match is None:
            return None
        service = match["service"]
        encoded_object = match["object"]
        params = {"bucket": unquote(match["bucket"]), "object": unquote(encoded_object or "")}
        route: Route | None
        if service == "upload/":
            route = _UPLOAD_ROUTES.get(method) if match["objects"] and encoded_object is None else None
        elif service == "download/":
            route = _OBJECT_DOWNLOAD if method == "GET" and encoded_object else None
        else:
            kind = "object" if encoded_object else "objects" if match["objects"] else "bucket"
            route = _JSON_ROUTES.get((kind, method))
        return Resolved(route, params) if route is not None else None
