"""generateContent on a Vertex AI endpoint: the Gemini surface's answer (generate.py) in Vertex's dress.

Vertex's GenerateContentResponse adds `modelVersion`, `createTime` and `responseId`, and its `usageMetadata`
adds `trafficType` and the per-modality token counts. Safety ratings are left out: Vertex's Gemini 2.x answers
carry none unless something was flagged, and Vertex numbers its harm categories differently from the Gemini
API (so the shared ratings would be wrong under `enum-encoding=int`). The zero `index` is left out, as proto3
JSON does.

A stream is the same answer cut in two at the middle of its text (one chunk when the text has fewer than two
characters); every chunk repeats `modelVersion`, `createTime` and `responseId`, and only the last carries
`finishReason` and `usageMetadata`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tunekeeper.emulator.generate import generate_response
from tunekeeper.emulator.timestamps import rfc3339

# Vertex's input limit is 131,072 tokens per example; at the emulator's four characters per token:
MAX_INPUT_CHARS = 131_072 * 4
# Enum numbers for `$alt=json;enum-encoding=int` (google.cloud.aiplatform.v1).
TRAFFIC_ON_DEMAND = ("ON_DEMAND", 1)
MODALITY_TEXT = ("TEXT", 1)


def _enum(pair: tuple[str, int], int_enums: bool) -> str | int:
    return pair[1] if int_enums else pair[0]


def vertex_response(
    examples: Sequence[tuple[str, str]],
    base_model: str,
    body: Mapping[str, Any],
    int_enums: bool,
    now: float,
    response_id: str,
) -> dict[str, Any]:
    """The whole answer of a model tuned on `examples` from `base_model`."""
    answer = generate_response(examples, body, int_enums, MAX_INPUT_CHARS)
    candidate = answer["candidates"][0]
    candidate.pop("index", None)
    candidate.pop("safetyRatings", None)
    usage = answer["usageMetadata"]
    text = _enum(MODALITY_TEXT, int_enums)
    usage["trafficType"] = _enum(TRAFFIC_ON_DEMAND, int_enums)
    usage["promptTokensDetails"] = [{"modality": text, "tokenCount": usage["promptTokenCount"]}]
    usage["candidatesTokensDetails"] = [{"modality": text, "tokenCount": usage["candidatesTokenCount"]}]
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": base_model,
        "createTime": rfc3339(now),
        "responseId": response_id,
    }


def stream_chunks(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The chunks a stream sends for `response` (from vertex_response)."""
    candidate = response["candidates"][0]
    content = candidate["content"]
    text: str = content["parts"][0]["text"]
    common = {key: response[key] for key in ("modelVersion", "createTime", "responseId")}
    last = {"candidates": [candidate], "usageMetadata": response["usageMetadata"], **common}
    if len(text) < 2:
        return [last]
    middle = len(text) // 2
    first = {"candidates": [{"content": {"role": content["role"], "parts": [{"text": text[:middle]}]}}], **common}
    last_candidate = {**candidate, "content": {"role": content["role"], "parts": [{"text": text[middle:]}]}}
    return [first, {**last, "candidates": [last_candidate]}]


def sse_body(chunks: Sequence[Mapping[str, Any]]) -> bytes:
    """Server-sent events: `data: {json}` per chunk, each ended by a blank line (CRLF, as Google sends)."""
    return b"".join(b"data: " + _compact(chunk) + b"\r\n\r\n" for chunk in chunks)


def json_array_body(chunks: Sequence[Mapping[str, Any]]) -> bytes:
    """A stream without `alt=sse`: one JSON array of the chunks, as Google's REST answers it."""
    return b"[" + b",".join(_compact(chunk) for chunk in chunks) + b"]"


def _compact(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
