"""Dataset and request validation: every rule gives a one-line DatasetError naming the field, example and rule."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from tunekeeper import datasets
from tunekeeper.backends.gemini.types import TrainingExample
from tunekeeper.datasets import (
    DataRoots,
    DatasetError,
    TuningRequest,
    load_eval_pairs,
    load_examples,
    validate_request,
)
from tunekeeper.tutorial import NUMBER_PAIRS

TUTORIAL = list(NUMBER_PAIRS)
TUTORIAL_EXAMPLES = [TrainingExample(text_input=i, output=o) for i, o in TUTORIAL]


def pair(text_input: object = "1", output: object = "2") -> dict[str, object]:
    return {"text_input": text_input, "output": output}


def error_of(call: object, *args: object) -> str:
    assert callable(call)
    with pytest.raises(DatasetError) as info:
        call(*args)
    message = str(info.value)
    assert message.isprintable(), message  # one line: no newline or other control character
    return message


# --- valid inputs ------------------------------------------------------------------------------------------------


def test_tutorial_dataset_as_parsed_json() -> None:
    data = [{"text_input": i, "output": o} for i, o in TUTORIAL]
    assert load_examples(data, None) == TUTORIAL_EXAMPLES


def test_tutorial_dataset_as_json_text_with_camel_case_keys() -> None:
    text = json.dumps([{"textInput": i, "output": o} for i, o in TUTORIAL])
    assert load_examples(text, None) == TUTORIAL_EXAMPLES


def test_both_key_spellings_mixed_in_one_dataset() -> None:
    data = '[{"text_input": "1", "output": "2"}, {"textInput": "3", "output": "4"}]'
    assert load_examples(data, None) == [TrainingExample("1", "2"), TrainingExample("3", "4")]


def test_json_bytes_are_accepted() -> None:
    assert load_examples(b'[{"text_input": "1", "output": "2"}]', None) == [TrainingExample("1", "2")]


def test_tutorial_dataset_as_jsonl_file(tmp_path: Path) -> None:
    path = tmp_path / "numbers.jsonl"
    lines = [json.dumps({"text_input": i, "output": o}) for i, o in TUTORIAL]
    lines.insert(3, "")  # blank lines are skipped
    lines.insert(7, "   ")
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    assert load_examples(None, str(path)) == TUTORIAL_EXAMPLES


def test_tutorial_dataset_as_csv_file_quotes_the_commas(tmp_path: Path) -> None:
    path = tmp_path / "numbers.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["text_input", "output"])
    writer.writerows(TUTORIAL)
    text = buffer.getvalue()
    assert '"10,100,000","10,100,001"' in text
    path.write_text(text, encoding="utf-8")
    assert load_examples(None, str(path)) == TUTORIAL_EXAMPLES


@pytest.mark.parametrize("input_column", ["text_input", "input", "textInput", " input "])
def test_csv_input_column_spellings(tmp_path: Path, input_column: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(f'output,{input_column}\r\n2,1\r\n"multi\nline",3\r\n', encoding="utf-8")
    assert load_examples(None, str(path)) == [TrainingExample("1", "2"), TrainingExample("3", "multi\nline")]


def test_csv_and_jsonl_tolerate_a_byte_order_mark(tmp_path: Path) -> None:
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes("\ufefftext_input,output\n1,2\n".encode())
    jsonl_path = tmp_path / "bom.JSONL"
    jsonl_path.write_bytes('\ufeff{"textInput": "1", "output": "2"}\n'.encode())
    assert load_examples(None, str(csv_path)) == [TrainingExample("1", "2")]
    assert load_examples(None, str(jsonl_path)) == [TrainingExample("1", "2")]


def test_limits_are_inclusive() -> None:
    longest = pair("x" * 40_000, "y" * 5_000)
    assert load_examples([longest], None) == [TrainingExample("x" * 40_000, "y" * 5_000)]


def test_eval_pairs() -> None:
    assert load_eval_pairs(None) == []
    assert load_eval_pairs("[]") == []
    assert load_eval_pairs('[{"textInput": "LXIII", "output": "64"}]') == [TrainingExample("LXIII", "64")]


# --- invalid inline data: (training_data -> message substring) ---------------------------------------------------

INLINE_ERRORS = [
    ("[", "training_data is not valid JSON: Expecting value: line 1 column 2 (char 1)"),
    ('[{"text_input": "1", "output": "2"},]', "training_data is not valid JSON: "),
    ('[\n  {"text_input": "1" "output": "2"}]', "line 2 column 22 (char 23)"),
    ("[" * 100_000, "training_data is not valid JSON: nested too deeply"),
    ("[" + "1" * 5000 + "]", "training_data is not valid JSON: "),
    ("", "training_data is an empty string"),
    (b"\xff[]", "training_data is not valid UTF-8 (byte 1)"),
    ("[]", "training_data has no examples"),
    ([], "training_data has no examples"),
    ('{"examples": []}', "training_data must be a JSON list of {text_input, output} objects, got object"),
    (42, "training_data must be a JSON list of {text_input, output} objects, got number"),
    (True, "got boolean"),
    ('"text"', "got string"),
    ([pair(), "1,2"], "training_data: example 1: must be an object with text_input and output, got string"),
    ([["1", "2"]], "example 0: must be an object with text_input and output, got list"),
    ([None], "example 0: must be an object with text_input and output, got null"),
    (
        [pair(), pair(), {"text_input": "a", "output": "b", "role": "user"}],
        "training_data: example 2: unknown key 'role'; examples are pairs of text_input and output",
    ),
    ([{"input": "1", "output": "2"}], "example 0: unknown key 'input'"),
    ([{"text_input": "1", "output": "2", 3: "x"}], "example 0: unknown key (key 3 of the object)"),
    ([{"messages": [{"role": "user", "content": "1"}]}], "example 0: multi-turn/chat examples ('messages')"),
    ([{"contents": [{"parts": [{"text": "1"}]}]}], "only text_input/output pairs"),
    ([{"text_input": "1", "textInput": "1", "output": "2"}], "example 0: has both text_input and textInput"),
    ([{"output": "2"}], "example 0: missing text_input"),
    ([{"textInput": "1"}], "example 0: missing output"),
    ([{}], "example 0: missing text_input"),
    ([pair(1, "2")], "example 0: text_input must be a string (text only), got number"),
    ([pair("1", 2.5)], "example 0: output must be a string (text only), got number"),
    ([pair("1", ["2"])], "example 0: output must be a string (text only), got list"),
    ([pair("1", {"text": "2"})], "output must be a string (text only), got object"),
    ([pair(None, "2")], "text_input must be a string (text only), got null"),
    ([pair(False, "2")], "text_input must be a string (text only), got boolean"),
    ([pair(10**100, "2")], "text_input must be a string (text only), got number"),
    ([{"textInput": 7, "output": "2"}], "example 0: textInput must be a string (text only)"),
    ([pair("", "2")], "example 0: text_input is empty"),
    ([pair(" \n\t", "2")], "example 0: text_input is empty"),
    ([pair("1", "  ")], "example 0: output is empty"),
    (
        [pair()] * 7 + [pair("x" * 41_200, "2")],
        "training_data: example 7: text_input is 41,200 characters; the limit is 40,000",
    ),
    ([pair("1", "y" * 5_001)], "example 0: output is 5,001 characters; the limit is 5,000"),
    ('[{"text_input": "\\ud800", "output": "2"}]', "example 0: text_input contains invalid Unicode"),
]


@pytest.mark.parametrize(("training_data", "expected"), INLINE_ERRORS)
def test_inline_training_data_errors(training_data: object, expected: str) -> None:
    assert expected in error_of(load_examples, training_data, None)


# An empty eval_data list means "no evaluation", so it is the one case that differs.
EVAL_ERRORS = [(data, expected) for data, expected in INLINE_ERRORS if not (data == "[]" or data == [])]


@pytest.mark.parametrize(("eval_data", "expected"), EVAL_ERRORS)
def test_eval_data_errors_name_eval_data(eval_data: object, expected: str) -> None:
    expected = expected.replace("training_data", "eval_data")
    message = error_of(load_eval_pairs, eval_data)
    assert expected in message
    assert "training_data" not in message


def test_error_messages_stay_on_one_line_and_short() -> None:
    key = "bad\nkey" + "k" * 1000
    message = error_of(load_examples, [{"text_input": "1", "output": "2", key: 1}], None)
    assert "unknown key (key 3 of the object)" in message and "bad" not in message
    assert len(message) < 200


def test_source_selection() -> None:
    assert error_of(load_examples, None, None) == "no training data: set training_data or training_file"
    assert error_of(load_examples, "[]", "/x.jsonl") == "give training_data or training_file, not both"


def test_example_count_limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(datasets, "MAX_EXAMPLES", 3)
    assert len(load_examples([pair()] * 3, None)) == 3
    assert "training_data has more than 3 examples; the limit is 3" in error_of(load_examples, [pair()] * 4, None)
    jsonl = tmp_path / "many.jsonl"
    jsonl.write_text("\n".join([json.dumps(pair())] * 4), encoding="utf-8")
    assert "many.jsonl has more than 3 examples" in error_of(load_examples, None, str(jsonl))
    many_csv = tmp_path / "many.csv"
    many_csv.write_text("input,output\n" + "1,2\n" * 4, encoding="utf-8")
    assert "many.csv has more than 3 examples" in error_of(load_examples, None, str(many_csv))


def test_inline_text_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MAX_DATA_BYTES", 100)
    text = json.dumps([pair()] * 10)
    assert f"training_data is {len(text):,} characters; the limit is 100" in error_of(load_examples, text, None)


# --- files -------------------------------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


GOOD_LINE = '{"text_input": "1", "output": "2"}'

FILE_ERRORS = [
    ("a.jsonl", f"{GOOD_LINE}\n\n{{bad json}}\n", "a.jsonl: line 3: not valid JSON: Expecting property name"),
    (
        "a.jsonl",
        f'{GOOD_LINE}\n  {{"text_input": "1" "output": "2"}}',
        "line 2: not valid JSON: Expecting ',' delimiter at column 22",
    ),
    (
        "a.jsonl",
        f'{GOOD_LINE}\n{GOOD_LINE}\n{{"text_input": "1", "output": "2", "role": "x"}}\n',
        "a.jsonl: line 3: example 2: unknown key 'role'",
    ),
    (
        "a.jsonl",
        f'\n{GOOD_LINE}\n{{"text_input": 5, "output": "2"}}\n',
        "line 3: example 1: text_input must be a string (text only)",
    ),
    (
        "a.jsonl",
        '[{"text_input": "1", "output": "2"}]\n',
        "line 1: example 0: must be an object with text_input and output, got list",
    ),
    ("a.jsonl", b'{"text_input": "\xff", "output": "2"}\n', "a.jsonl: line 1: not valid UTF-8 (byte 17)"),
    ("a.jsonl", "\n \n", "a.jsonl: no examples"),
    ("a.jsonl", "", "a.jsonl: no examples"),
    ("a.jsonl", "[" * 100_000 + "\n", "line 1: not valid JSON: nested too deeply"),
    ("a.jsonl", f'{GOOD_LINE}\n{{"messages": []}}\n', "line 2: example 1: multi-turn/chat examples ('messages')"),
    ("a.csv", "", "a.csv: the file is empty; a header row with text_input and output is required"),
    ("a.csv", "\n\n", "the file is empty"),
    (
        "a.csv",
        "1,2\n3,4\n",
        "a.csv: line 1: the first row must be a header with columns text_input and output; none of its 2 columns",
    ),
    (
        "a.csv",
        "text_input,output,label,k9\n1,2,x,y\n",
        "a.csv: line 1: unknown column 'label'; columns are text_input (or input/textInput) and output",
    ),
    ("a.csv", "input,text_input,output\n1,1,2\n", "line 1: more than one input column ('input' and 'text_input')"),
    ("a.csv", "input,output,output\n1,2,2\n", "line 1: column 'output' appears twice"),
    ("a.csv", "text_input\n1\n", "line 1: missing column 'output'"),
    ("a.csv", "output\n1\n", "line 1: missing column 'text_input' (or input/textInput)"),
    ("a.csv", "text_input,output\n1,2\n3\n", "a.csv: line 3: example 1: has 1 fields; the header has 2"),
    ("a.csv", "text_input,output\n1,2\n3,4,5\n", "line 3: example 1: has 3 fields; the header has 2"),
    ("a.csv", "text_input,output\n1,2\n\n ,4\n", "a.csv: line 4: example 1: text_input is empty"),
    ("a.csv", "text_input,output\n1,\n", "line 2: example 0: output is empty"),
    ("a.csv", 'text_input,output\n1,2\n"1\n2"x,y\n', "a.csv: line 4: not valid CSV: ',' expected after '\"'"),
    ("a.csv", 'text_input,output\n1,"2\n', "not valid CSV: unexpected end of data"),
    ("a.csv", "text_input,output\n", "a.csv: no examples"),
    ("a.csv", b"text_input,output\n1,\xe9\n", "a.csv: line 2: not valid UTF-8 (byte 3)"),
    (
        "a.csv",
        "text_input,output\n" + "x" * 40_001 + ",2\n",
        "line 2: example 0: text_input is 40,001 characters; the limit is 40,000",
    ),
    ("a.txt", GOOD_LINE, "a.txt: unsupported file type '.txt'; use .jsonl or .csv"),
    ("a", GOOD_LINE, "unsupported file type '(none)'"),
    ("a.json", "[]", "unsupported file type '.json'"),
]


@pytest.mark.parametrize(("name", "content", "expected"), FILE_ERRORS)
def test_training_file_errors(tmp_path: Path, name: str, content: str | bytes, expected: str) -> None:
    path = write(tmp_path, name, content)
    message = error_of(load_examples, None, path)
    assert message.startswith(f"training_file {tmp_path}")
    assert expected in message


def test_training_file_cannot_be_read(tmp_path: Path) -> None:
    missing = str(tmp_path / "x" / "y.jsonl")
    assert error_of(load_examples, None, missing) == f"training_file {missing}: cannot read: No such file or directory"
    directory = tmp_path / "dir.csv"
    directory.mkdir()
    assert error_of(load_examples, None, str(directory)).endswith(
        ": not a regular file (a FIFO, device, socket or directory is never read)"
    )
    assert "cannot read: embedded null" in error_of(load_examples, None, "/tmp/a\0b.csv")


@pytest.mark.parametrize(
    ("training_file", "expected"),
    [
        (42, "training_file must be a path (a string), got number 42"),
        (["a.csv"], "training_file must be a path (a string), got list"),
        ("", "training_file is empty"),
        ("  ", "training_file is empty"),
    ],
)
def test_training_file_odd_values(training_file: object, expected: str) -> None:
    assert expected in error_of(load_examples, None, training_file)


def test_file_path_with_control_characters_is_quoted(tmp_path: Path) -> None:
    message = error_of(load_examples, None, str(tmp_path / "a\nb.jsonl"))
    assert "a\\nb.jsonl" in message


def test_file_size_and_line_limits_are_streamed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(datasets, "MAX_LINE_BYTES", 64)
    long_line = write(tmp_path, "long.jsonl", GOOD_LINE + "\n" + " " * 100 + GOOD_LINE + "\n")
    assert "long.jsonl: line 2: longer than the limit of 64 bytes" in error_of(load_examples, None, long_line)
    monkeypatch.setattr(datasets, "MAX_DATA_BYTES", 200)
    big = write(tmp_path, "big.csv", "input,output\n" + "1,2\n" * 100)
    assert "big.csv: larger than the limit of 200 bytes" in error_of(load_examples, None, big)


def test_a_device_or_a_fifo_is_refused_without_reading(tmp_path: Path) -> None:
    link = tmp_path / "zero.jsonl"
    link.symlink_to("/dev/zero")
    assert error_of(load_examples, None, str(link)).endswith(
        ": not a regular file (a FIFO, device, socket or directory is never read)"
    )
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)  # no writer: a blocking open would wait forever
    assert "pipe.csv: not a regular file" in error_of(load_examples, None, str(fifo))


# --- request columns ---------------------------------------------------------------------------------------------

GOOD_REQUEST: dict[str, object] = {
    "display_name": "number generator",
    "epoch_count": None,
    "batch_size": None,
    "learning_rate": None,
    "learning_rate_multiplier": None,
    "tuned_model_id": None,
}


def request(**changes: object) -> TuningRequest:
    return validate_request(**{**GOOD_REQUEST, **changes})


def test_valid_requests() -> None:
    assert request() == TuningRequest("number generator", None, None, None, None, None)
    full = request(epoch_count=5.0, batch_size=Decimal(2), learning_rate=0.001, tuned_model_id="number-generator-42")
    assert full == TuningRequest("number generator", 5, 2, 0.001, None, "number-generator-42")
    assert type(full.epoch_count) is int
    assert type(full.batch_size) is int
    edges = request(display_name="x" * 40, epoch_count=1000, batch_size=1024, learning_rate_multiplier=100)
    assert edges == TuningRequest("x" * 40, 1000, 1024, None, 100.0, None)
    assert request(learning_rate=1, epoch_count=1, batch_size=1).learning_rate == 1.0
    assert request(learning_rate=Decimal("0.0002")).learning_rate == 0.0002
    assert request(tuned_model_id="a").tuned_model_id == "a"


REQUEST_ERRORS = [
    ({"display_name": None}, "display_name is required"),
    ({"display_name": 5}, "display_name must be a string, got number 5"),
    ({"display_name": ""}, "display_name is empty"),
    ({"display_name": "  \t"}, "display_name is empty"),
    ({"display_name": "x" * 41}, "display_name is 41 characters; the limit is 40"),
    ({"epoch_count": 0}, "epoch_count must be a whole number from 1 to 1000, got number 0"),
    ({"epoch_count": 1001}, "epoch_count must be a whole number from 1 to 1000, got number 1001"),
    ({"epoch_count": 5.5}, "epoch_count must be a whole number from 1 to 1000, got number 5.5"),
    ({"epoch_count": True}, "epoch_count must be a whole number from 1 to 1000, got boolean true"),
    ({"epoch_count": "5"}, "epoch_count must be a whole number from 1 to 1000, got string '5'"),
    ({"epoch_count": math.nan}, "epoch_count must be a whole number from 1 to 1000, got number nan"),
    ({"epoch_count": math.inf}, "got number inf"),
    ({"epoch_count": 10**400}, "got a very large number"),
    ({"epoch_count": 1e300}, "epoch_count must be a whole number"),
    ({"epoch_count": Decimal("5.5")}, "got number 5.5"),
    ({"epoch_count": Decimal("sNaN")}, "got number sNaN"),
    ({"epoch_count": Decimal("1E+999999999")}, "got number 1E+999999999"),
    ({"epoch_count": [5]}, "epoch_count must be a whole number from 1 to 1000, got list"),
    ({"batch_size": 0}, "batch_size must be a whole number from 1 to 1024, got number 0"),
    ({"batch_size": 1025}, "batch_size must be a whole number from 1 to 1024"),
    ({"batch_size": -4}, "batch_size must be a whole number from 1 to 1024, got number -4"),
    ({"batch_size": False}, "batch_size must be a whole number from 1 to 1024, got boolean false"),
    ({"learning_rate": 0}, "learning_rate must be a number greater than 0 and at most 1, got number 0"),
    ({"learning_rate": -0.001}, "learning_rate must be a number greater than 0 and at most 1"),
    ({"learning_rate": 1.5}, "learning_rate must be a number greater than 0 and at most 1, got number 1.5"),
    ({"learning_rate": math.nan}, "learning_rate must be a number greater than 0 and at most 1, got number nan"),
    ({"learning_rate": Decimal("NaN")}, "learning_rate must be a number greater than 0 and at most 1"),
    ({"learning_rate": Decimal("1E-999999")}, "learning_rate must be a number greater than 0 and at most 1"),
    ({"learning_rate": "0.001"}, "learning_rate must be a number greater than 0 and at most 1, got string '0.001'"),
    ({"learning_rate": True}, "got boolean true"),
    ({"learning_rate_multiplier": 0}, "learning_rate_multiplier must be a number greater than 0 and at most 100"),
    ({"learning_rate_multiplier": 101}, "learning_rate_multiplier must be a number greater than 0 and at most 100"),
    ({"learning_rate_multiplier": math.inf}, "learning_rate_multiplier must be a number greater than 0"),
    (
        {"learning_rate": 0.001, "learning_rate_multiplier": 1},
        "set learning_rate or learning_rate_multiplier, not both",
    ),
    ({"tuned_model_id": 42}, "tuned_model_id must be a string, got number 42"),
    ({"tuned_model_id": ""}, "tuned_model_id '' is not a valid id: lowercase letters, digits and '-'"),
    ({"tuned_model_id": "Number-Generator"}, "tuned_model_id 'Number-Generator' is not a valid id"),
    ({"tuned_model_id": "42-model"}, "tuned_model_id '42-model' is not a valid id"),
    ({"tuned_model_id": "model-"}, "tuned_model_id 'model-' is not a valid id"),
    ({"tuned_model_id": "model_1"}, "tuned_model_id 'model_1' is not a valid id"),
    ({"tuned_model_id": "a" * 41}, "is not a valid id"),
    ({"tuned_model_id": "model-1\n"}, "tuned_model_id 'model-1\\n' is not a valid id"),
]


@pytest.mark.parametrize(("changes", "expected"), REQUEST_ERRORS)
def test_request_errors(changes: dict[str, object], expected: str) -> None:
    with pytest.raises(DatasetError) as info:
        request(**changes)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


# --- fuzzing: garbage in, DatasetError (or a valid result) out -------------------------------------------------


def random_scalar(rng: random.Random) -> object:
    choices: list[object] = [
        None,
        True,
        False,
        rng.randint(-(10**6), 10**6),
        10 ** rng.randint(18, 5000),
        rng.uniform(-1e6, 1e6),
        math.nan,
        math.inf,
        -math.inf,
        Decimal("sNaN"),
        Decimal(rng.randint(-5, 5000)) / 7,
        "",
        " ",
        "\ud800",
        "".join(chr(rng.randint(0, 0x2FFFF)) for _ in range(rng.randint(0, 12))),
        rng.choice(["text_input", "textInput", "output", "messages", "contents", "role"]),
        object(),
        b"\x00\xff",
        {1, 2},
    ]
    return rng.choice(choices)


def random_value(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth > 4 or roll < 0.4:
        return random_scalar(rng)
    if roll < 0.6:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if roll < 0.9:  # example-shaped objects, often nearly valid
        keys = rng.sample(["text_input", "textInput", "output", "role", "messages", "contents", "input"], 3)
        return {key: random_value(rng, depth + 1) if rng.random() < 0.5 else "ok" for key in keys}
    return {rng.choice(["k", 1, None, 2.5, ("t",), True]): random_value(rng, depth + 1)}


def mutate_json(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(len(chars) + 1)
        action = rng.random()
        if action < 0.4 and chars:
            del chars[min(position, len(chars) - 1)]
        else:
            chars.insert(position, rng.choice('[]{}",:\\ \n0aeu\x00\ud800'))
    return "".join(chars)


def message_or_none(call: Callable[..., object], *args: object, **kwargs: object) -> str | None:
    """The DatasetError message, or None when the input was valid; any other exception fails the test."""
    try:
        call(*args, **kwargs)
    except DatasetError as exc:
        return str(exc)
    return None


def test_fuzz_inline_data_raises_only_dataset_error() -> None:
    rng = random.Random(20240314)
    valid = json.dumps([{"text_input": i, "output": o} for i, o in TUTORIAL[:3]])
    messages: list[str | None] = []
    for _ in range(600):
        kind = rng.random()
        if kind < 0.45:
            value: object = [random_value(rng) for _ in range(rng.randint(0, 3))]
        elif kind < 0.6:
            value = random_value(rng)
        elif kind < 0.9:
            value = mutate_json(rng, valid)
        else:
            value = mutate_json(rng, valid).encode("utf-8", "surrogatepass")
        messages.append(message_or_none(load_examples, value, None))
        messages.append(message_or_none(load_eval_pairs, value))
    errors = [message for message in messages if message is not None]
    assert len(errors) > 1000
    assert len(messages) - len(errors) > 10  # some valid inputs too, so the generator is not trivially broken
    assert all(message.isprintable() and len(message) < 400 for message in errors)


def test_fuzz_files_raise_only_dataset_error(tmp_path: Path) -> None:
    rng = random.Random(7)
    messages: list[str | None] = []
    valid_jsonl = "\n".join(json.dumps({"textInput": i, "output": o}) for i, o in TUTORIAL[:4])
    valid_csv = 'text_input,output\n1,2\n"1,000","1,001"\n'
    for index in range(120):
        suffix, valid = (".jsonl", valid_jsonl) if index % 2 else (".csv", valid_csv)
        path = tmp_path / f"f{index}{suffix}"
        if rng.random() < 0.3:
            path.write_bytes(rng.randbytes(rng.randint(0, 200)))
        else:
            path.write_bytes(mutate_json(rng, valid).encode("utf-8", "surrogatepass"))
        messages.append(message_or_none(load_examples, None, str(path)))
    errors = [message for message in messages if message is not None]
    assert len(errors) > 60
    assert all(message.isprintable() for message in errors)


def test_fuzz_request_raises_only_dataset_error() -> None:
    rng = random.Random(99)
    messages: list[str | None] = []
    fields = list(GOOD_REQUEST)
    for _ in range(500):
        changes = {field: random_value(rng) for field in rng.sample(fields, rng.randint(1, 3))}
        messages.append(message_or_none(request, **changes))
    errors = [message for message in messages if message is not None]
    assert len(errors) > 400
    assert all(message.isprintable() for message in errors)


# --- data roots: where the daemon may read training files --------------------------------------------------------

SECRET_LINE = "AIzaSyD-secret-credential-0123456789abcdef"


def roots_error(roots: DataRoots, path: str | Path) -> str:
    return error_of(lambda p: datasets.load_dataset(None, p, files=roots.open), str(path))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "root"
    (directory / "team").mkdir(parents=True)
    (directory / "team" / "ok.jsonl").write_text(GOOD_LINE + "\n")
    return directory


def test_a_file_below_a_root_is_read(root: Path) -> None:
    roots = DataRoots((str(root),))
    dataset = datasets.load_dataset(None, str(root / "team" / "ok.jsonl"), files=roots.open)
    assert dataset.examples == (TrainingExample("1", "2"),)
    # The longest root that holds the path is the one walked from; others around it do not matter.
    nested = DataRoots(("/nonexistent-root", str(root), str(root / "team")))
    assert len(datasets.load_dataset(None, str(root / "team" / "ok.jsonl"), files=nested.open).examples) == 1


def test_no_roots_no_files(root: Path) -> None:
    message = roots_error(DataRoots(()), root / "team" / "ok.jsonl")
    assert "no data roots are configured ([data] roots)" in message


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("outside.jsonl", "must be an absolute path under a data root"),
        ("/etc/passwd.csv", "not under a data root ([data] roots)"),
        ("{root}/team/../../other/x.jsonl", "'..' is not allowed"),
        ("{root}x/a.jsonl", "not under a data root"),  # a sibling that starts with the root's name
    ],
)
def test_paths_outside_the_roots_are_refused(root: Path, path: str, expected: str) -> None:
    assert expected in roots_error(DataRoots((str(root),)), path.format(root=root))


def test_symbolic_links_below_a_root_are_not_followed(root: Path, tmp_path: Path) -> None:
    """Another team's private file (0600), reached through a link to it or through a linked directory."""
    private = tmp_path / "private"
    private.mkdir()
    secret = private / "theirs.csv"
    secret.write_text(f"{SECRET_LINE}\n1,2\n")
    secret.chmod(0o600)
    (root / "team" / "link.csv").symlink_to(secret)
    (root / "team" / "linked-dir").symlink_to(private)
    (root / "team" / "inside.jsonl").symlink_to(root / "team" / "ok.jsonl")  # even one staying inside
    roots = DataRoots((str(root),))
    for path in ("link.csv", "linked-dir/theirs.csv", "inside.jsonl"):
        message = roots_error(roots, root / "team" / path)
        assert "symbolic link below the data root; links are not followed" in message, message
        assert SECRET_LINE not in message


def test_a_hard_link_to_a_file_outside_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "theirs.jsonl"
    outside.write_text(GOOD_LINE + "\n")
    os.link(outside, root / "team" / "linked.jsonl")
    assert "the file has other hard links" in roots_error(DataRoots((str(root),)), root / "team" / "linked.jsonl")


def test_a_fifo_below_a_root_is_refused_at_once(root: Path) -> None:
    fifo = root / "team" / "pipe.jsonl"
    os.mkfifo(fifo)  # no writer: a blocking open would never return
    assert "pipe.jsonl: not a regular file" in roots_error(DataRoots((str(root),)), fifo)


def test_messages_never_quote_a_files_content(root: Path) -> None:
    """A credential file, a shadow line or an environment block as a .csv header or a .jsonl key: named by position."""
    contents = {
        "key.csv": f"{SECRET_LINE}\n",
        "shadow.csv": "root:$6$abcdefgh$SECRETHASH:19000:0:99999:7:::\n",
        "environ.csv": f"text_input,output,API_KEY={SECRET_LINE}\n1,2,3\n",
        "keys.jsonl": json.dumps({"text_input": "1", "output": "2", SECRET_LINE: "x"}) + "\n",
        "number.jsonl": json.dumps({"text_input": 918273645, "output": "2"}) + "\n",
    }
    roots = DataRoots((str(root),))
    for name, text in contents.items():
        (root / name).write_text(text)
        message = roots_error(roots, root / name)
        for secret in (SECRET_LINE, "SECRETHASH", "API_KEY", "918273645"):
            assert secret not in message, (name, message)
        assert "line 1" in message, message


def test_examples_json_reads_back_as_the_same_examples() -> None:
    data = [
        {"text_input": "1", "output": "2"},
        {"contents": [{"role": "user", "parts": [{"text": "q"}]}, {"role": "model", "parts": [{"text": "a"}]}]},
        {
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "contents": [{"role": "user", "parts": [{"text": "q"}]}, {"role": "model", "parts": [{"text": "a"}]}],
        },
    ]
    dataset = datasets.load_dataset(data, None, files=DataRoots(()).open)
    again = datasets.load_dataset(datasets.examples_json(dataset.examples), None, files=DataRoots(()).open)
    assert again.examples == dataset.examples
