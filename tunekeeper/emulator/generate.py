"""generateContent on a tuned model: the shape of a tuned model's answer, not its intelligence.

The answer is the output of the training example whose input is most similar to the prompt (difflib's ratio,
case-insensitive; the first example wins a tie). Token counts are estimated as one token per four characters.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from tunekeeper.emulator.errors import ApiError, invalid_argument

# Enum numbers for `$alt=json;enum-encoding=int` (google.ai.generativelanguage.v1beta).
FINISH_REASON_STOP = ("STOP", 1)
NEGLIGIBLE = ("NEGLIGIBLE", 1)
HARM_CATEGORIES = (
    ("HARM_CATEGORY_SEXUALLY_EXPLICIT", 9),
    ("HARM_CATEGORY_HATE_SPEECH", 8),
    ("HARM_CATEGORY_HARASSMENT", 7),
    ("HARM_CATEGORY_DANGEROUS_CONTENT", 10),
)


def prompt_text(body: Mapping[str, Any], max_input_chars: int) -> str:
    """The text of the last user turn. Tuned models take text only and no JSON mode."""
    contents = body.get("contents")
    if not contents or not isinstance(contents, list):
        raise invalid_argument("* GenerateContentRequest.contents: contents is not specified", "contents")
    config = body.get("generationConfig")
    if isinstance(config, dict) and config.get("responseMimeType") not in (None, "text/plain"):
        raise invalid_argument(
            "JSON mode is not supported for tuned models: generation_config.response_mime_type must be text/plain.",
            "generation_config.response_mime_type",
        )
    last = contents[-1]
    if not isinstance(last, dict) or not isinstance(last.get("parts"), list) or not last["parts"]:
        raise invalid_argument(
            "* GenerateContentRequest.contents[-1].parts: contents.parts must not be empty.", "contents.parts"
        )
    texts: list[str] = []
    for part in last["parts"]:
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise invalid_argument("Tuned models accept text parts only.", "contents.parts")
        texts.append(part["text"])
    text = "".join(texts)
    total = sum(
        len(part.get("text", ""))
        for content in contents
        if isinstance(content, dict)
        for part in content.get("parts", [])
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )
    if total > max_input_chars:
        raise ApiError(
            "INVALID_ARGUMENT",
            f"The input has {total} characters; tuned models accept at most {max_input_chars}.",
        )
    return text


def closest_output(prompt: str, examples: Sequence[tuple[str, str]]) -> str:
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(prompt.casefold())
    best_score = -1.0
    best_output = examples[0][1]
    for text_input, output in examples:
        matcher.set_seq1(text_input.casefold())
        # quick_ratio is an upper bound of ratio: skip the exact computation when it cannot win.
        if matcher.real_quick_ratio() <= best_score or matcher.quick_ratio() <= best_score:
            continue
        score = matcher.ratio()
        if score > best_score:
            best_score, best_output = score, output
    return best_output


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def generate_response(
    examples: Sequence[tuple[str, str]], body: Mapping[str, Any], int_enums: bool, max_input_chars: int
) -> dict[str, Any]:
    """The answer of a model tuned on `examples`; inputs of more than `max_input_chars` characters are refused."""
    prompt = prompt_text(body, max_input_chars)
    answer = closest_output(prompt, examples)

    def enum(pair: tuple[str, int]) -> str | int:
        return pair[1] if int_enums else pair[0]

    prompt_tokens = _tokens(prompt)
    answer_tokens = _tokens(answer)
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": answer}], "role": "model"},
                "finishReason": enum(FINISH_REASON_STOP),
                "index": 0,
                "safetyRatings": [
                    {"category": enum(category), "probability": enum(NEGLIGIBLE)} for category in HARM_CATEGORIES
                ],
            }
        ],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": answer_tokens,
            "totalTokenCount": prompt_tokens + answer_tokens,
        },
    }
