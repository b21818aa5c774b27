"""Load and validate a job's training data and request columns before anything is sent to the service.

Producers insert rows with plain SQL, so every input here may be of any type and shape. Every problem becomes a
`DatasetError` with a one-line message naming the field, the example (0-based index) and, for files, the line.
Messages describe what is wrong, never the text of an example.

Two readers:

- `load_dataset`, the daemon's: the training data as a `Dataset` of the backend port, checked for shape only.
  Examples are text_input/output pairs or Vertex AI's `contents` conversations (from `training_data`, or a
  .jsonl file), or CSV pairs; a `training_file` that is a `gs://` URI names data already in Cloud Storage,
  which is not read here. Each backend then checks the dataset against its own service's limits and forms
  (`TuningBackend.check`), with messages of the same form (`Dataset.where`).
- `load_examples` (evaluation pairs, the CLI's files): pairs only, within the Gemini API's limits.

Limits beyond the services' published ones:

- at most `MAX_EXAMPLES` (100,000) examples per dataset: far above Google's recommended 100 to 500;
- a training file or inline JSON text of at most `MAX_DATA_BYTES` (256 MiB), read line by line, each line at
  most `MAX_LINE_BYTES` (1 MiB: room for a maximal example even with every character JSON-escaped).

Files are read with blocking I/O (call from a worker thread in the daemon), through a `FileOpener`: the daemon's
`DataRoots` opens only regular files under its configured roots, without following a symbolic link; the CLI's
`open_own_file` opens what its user names. Both open non-blocking and refuse anything but a regular file, so a
FIFO or a device can never hold a reader.

Messages quote no file content: they name the line, the column or key by position and the rule. Only words of
the examples' own vocabulary (`role`, `input`, ...) are quoted, since naming them helps and they are no secret.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal, TypeVar

from tunekeeper.backends.gemini.types import (
    MAX_DISPLAY_NAME_CHARS,
    MAX_INPUT_CHARS,
    MAX_OUTPUT_CHARS,
    TUNED_MODEL_ID_PATTERN,
    TrainingExample,
)
from tunekeeper.backends.port import Conversation, Dataset, Example, Turn

E = TypeVar("E", bound=Example)

MAX_EXAMPLES = 100_000
MAX_DATA_BYTES = 256 * 1024 * 1024
MAX_LINE_BYTES = 1024 * 1024

# Hyperparameter ranges: wide enough for any sensible run, narrow enough to catch unit mistakes (e.g. a
# learning rate of 5 meant as a multiplier). The service's defaults: 5 epochs, batch 4 or 16, rate 0.001/0.0002.
EPOCH_COUNT_RANGE = (1, 1000)
BATCH_SIZE_RANGE = (1, 1024)
MAX_LEARNING_RATE = 1.0
MAX_LEARNING_RATE_MULTIPLIER = 100.0

_INPUT_KEYS = ("text_input", "textInput")
_CSV_INPUT_COLUMNS = ("text_input", "input", "textInput")
_CHAT_KEYS = ("messages", "contents")
_SYSTEM_KEYS = ("systemInstruction", "system_instruction")
_CONTENTS_KEYS = ("contents", *_SYSTEM_KEYS)
_ROLES: tuple[Literal["user"], Literal["model"]] = ("user", "model")
_TUNED_MODEL_ID_RE = re.compile(TUNED_MODEL_ID_PATTERN)
_CLIP = 60
# Keys and column names a message may quote: the vocabulary of example formats. Anything else in a producer's
# data (a file's first line may be a key or a password) is named by its position, never shown.
_KNOWN_NAMES = frozenset(
    {
        *_INPUT_KEYS,
        *_CSV_INPUT_COLUMNS,
        *_CHAT_KEYS,
        *_SYSTEM_KEYS,
        "output",
        "role",
        "parts",
        "text",
        "content",
        "prompt",
        "completion",
        "response",
        "instruction",
        "system",
        "context",
        "label",
        "labels",
        "target",
        "question",
        "answer",
        "expected",
        "expected_output",
        "input_text",
        "output_text",
        "id",
        "note",
        "notes",
        "metadata",
    }
)


class DatasetError(ValueError):
    """A job's training data or request columns break a rule; the message is one line, fit for `last_error`."""


@dataclass(frozen=True, slots=True)
class TuningRequest:
    """A job's request columns after validation; None means the service's default."""

    display_name: str
    epoch_count: int | None
    batch_size: int | None
    learning_rate: float | None
    learning_rate_multiplier: float | None
    tuned_model_id: str | None


# --- describing arbitrary values in one short line -------------------------------------------------------------


def _quote(text: str, clip: int = _CLIP) -> str:
    """A string shown in a message: repr escapes newlines and control characters; long text is clipped."""
    if len(text) > clip:
        return repr(text[:clip]) + "..."
    return repr(text)


def _kind(value: object) -> str:
    """The JSON name of a value's type; never recurses into the value (it may be nested arbitrarily deep)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: object) -> str:
    """Kind and, for scalars, the value itself, bounded in length (a huge int cannot even be turned into text)."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"number {value}" if value.bit_length() <= 64 else "a very large number"
    if isinstance(value, float | Decimal):
        text = str(value)
        return f"number {text if len(text) <= _CLIP else text[:_CLIP] + '...'}"
    if isinstance(value, str):
        return f"string {_quote(value)}"
    return _kind(value)


def _key(key: object, position: int) -> str:
    """An unknown key: quoted if it is a word of the examples' vocabulary, else named by its position only."""
    if isinstance(key, str) and key in _KNOWN_NAMES:
        return repr(key)
    return f"(key {position + 1} of the object)"


def _column(name: str, position: int) -> str:
    """A CSV header cell, by the same rule as `_key`."""
    return repr(name) if name in _KNOWN_NAMES else f"(column {position + 1})"


# --- examples ----------------------------------------------------------------------------------------------------


def _check_text(where: str, field: str, value: object, limit: int | None) -> str:
    if not isinstance(value, str):
        raise DatasetError(f"{where}{field} must be a string (text only), got {_kind(value)}")
    if not value.strip():
        raise DatasetError(f"{where}{field} is empty")
    if limit is not None and len(value) > limit:
        raise DatasetError(f"{where}{field} is {len(value):,} characters; the limit is {limit:,}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON escapes can produce lone surrogates, which cannot be sent to the service.
        raise DatasetError(f"{where}{field} contains invalid Unicode (an unpaired surrogate)") from None
    return value


def _example(where: str, item: object) -> TrainingExample:
    """One pair within the Gemini API's limits; `where` is the message prefix naming the source and the example."""
    if isinstance(item, dict):
        for chat_key in _CHAT_KEYS:
            if chat_key in item:
                raise DatasetError(
                    f"{where}multi-turn/chat examples ({chat_key!r}) are not supported; "
                    "only text_input/output pairs of plain text"
                )
    return _pair(where, item, limited=True)


def _pair(where: str, item: object, *, limited: bool) -> TrainingExample:
    """One text_input/output pair; `limited`: within the Gemini API's limits (else the backend checks its own)."""
    if not isinstance(item, dict):
        raise DatasetError(f"{where}must be an object with text_input and output, got {_kind(item)}")
    if all(key in item for key in _INPUT_KEYS):
        raise DatasetError(f"{where}has both text_input and textInput; give one")
    for position, key in enumerate(item):
        if key not in _INPUT_KEYS and key != "output":
            raise DatasetError(f"{where}unknown key {_key(key, position)}; examples are pairs of text_input and output")
    input_key = next((key for key in _INPUT_KEYS if key in item), None)
    if input_key is None:
        raise DatasetError(f"{where}missing text_input")
    if "output" not in item:
        raise DatasetError(f"{where}missing output")
    text_input = _check_text(where, input_key, item[input_key], MAX_INPUT_CHARS if limited else None)
    output = _check_text(where, "output", item["output"], MAX_OUTPUT_CHARS if limited else None)
    return TrainingExample(text_input=text_input, output=output)


def _any_example(where: str, item: object) -> Example:
    """One training example in either form: a `contents` conversation or a text_input/output pair."""
    if isinstance(item, dict):
        if "messages" in item:
            raise DatasetError(
                f"{where}chat examples with 'messages' are not supported; give Vertex AI's contents "
                "(turns of role user/model with text parts) or text_input/output pairs"
            )
        if any(key in item for key in _CONTENTS_KEYS):
            return _conversation(where, item)
    return _pair(where, item, limited=False)


def _text_parts(where: str, field: str, parts: object) -> tuple[str, ...]:
    """A turn's (or system instruction's) parts, which must all be text; together not blank. Never quoted."""
    if not isinstance(parts, list) or not parts:
        raise DatasetError(f"{where}{field}.parts must be a non-empty list of text parts, got {_kind(parts)}")
    texts: list[str] = []
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or list(part) != ["text"]:
            raise DatasetError(f'{where}{field}.parts[{index}] must be a text part, {{"text": "..."}}; only text')
        text = part["text"]
        if not isinstance(text, str):
            raise DatasetError(f"{where}{field}.parts[{index}].text must be a string, got {_kind(text)}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise DatasetError(f"{where}{field}.parts[{index}].text contains invalid Unicode") from None
        texts.append(text)
    if not "".join(texts).strip():
        raise DatasetError(f"{where}{field} is empty")
    return tuple(texts)


def _conversation(where: str, item: dict[object, object]) -> Conversation:
    """Vertex AI's form: `contents` (turns alternating user and model, starting with the user and ending with
    the model) and optionally `systemInstruction`."""
    for position, key in enumerate(item):
        if key not in _CONTENTS_KEYS:
            raise DatasetError(
                f"{where}unknown key {_key(key, position)}; "
                "a contents example has contents and, optionally, systemInstruction"
            )
    if all(key in item for key in _SYSTEM_KEYS):
        raise DatasetError(f"{where}has both systemInstruction and system_instruction; give one")
    system: tuple[str, ...] = ()
    system_key = next((key for key in _SYSTEM_KEYS if key in item), None)
    if system_key is not None:
        value = item[system_key]
        if not isinstance(value, dict) or "parts" not in value or any(k not in ("parts", "role") for k in value):
            raise DatasetError(f"{where}{system_key} must be an object with parts (and optionally role)")
        system = _text_parts(where, system_key, value["parts"])
    contents = item.get("contents")
    if not isinstance(contents, list) or not contents:
        raise DatasetError(f"{where}contents must be a non-empty list of turns, got {_kind(contents)}")
    turns: list[Turn] = []
    for index, turn in enumerate(contents):
        field = f"contents[{index}]"
        if not isinstance(turn, dict) or set(turn) != {"role", "parts"}:
            raise DatasetError(f"{where}{field} must be an object with role and parts")
        expected = _ROLES[index % 2]
        role = turn["role"]
        if role not in _ROLES:
            raise DatasetError(f'{where}{field}.role must be "user" or "model"')
        if role != expected:
            raise DatasetError(f'{where}{field}.role must be "{expected}": turns alternate, starting with user')
        turns.append(Turn(expected, _text_parts(where, field, turn["parts"])))
    if len(turns) % 2:
        raise DatasetError(f"{where}the last turn must be the model's (the answer to learn)")
    return Conversation(tuple(turns), system)


def _too_many(source: str) -> DatasetError:
    return DatasetError(f"{source} has more than {MAX_EXAMPLES:,} examples; the limit is {MAX_EXAMPLES:,}")


def _parse_json_text(field: str, text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{field} is not valid JSON: {exc}") from None
    except RecursionError:
        raise DatasetError(f"{field} is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise DatasetError(f"{field} is not valid JSON: {str(exc).splitlines()[0]}") from None


def _inline(field: str, data: object, *, allow_empty: bool, make: Callable[[str, object], E]) -> list[E]:
    """A JSON list of examples held in a database column: parsed already, JSON text, or bytes of JSON text."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{field} is not valid UTF-8 (byte {exc.start + 1})") from None
    if isinstance(data, str):
        if len(data) > MAX_DATA_BYTES:
            raise DatasetError(f"{field} is {len(data):,} characters; the limit is {MAX_DATA_BYTES:,}")
        if not data.strip():
            raise DatasetError(f"{field} is an empty string; it must be a JSON list of examples")
        data = _parse_json_text(field, data)
    if not isinstance(data, list):
        raise DatasetError(f"{field} must be a JSON list of {{text_input, output}} objects, got {_kind(data)}")
    if len(data) > MAX_EXAMPLES:
        raise _too_many(field)
    if not data and not allow_empty:
        raise DatasetError(f"{field} has no examples")
    return [make(f"{field}: example {index}: ", item) for index, item in enumerate(data)]


# --- files -------------------------------------------------------------------------------------------------------


def _lines(stream: BinaryIO, source: str) -> Iterator[str]:
    """Decoded lines of a file, each and all bounded, so a huge or endless file cannot fill memory."""
    total = 0
    line_no = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        line_no += 1
        total += len(raw)
        if total > MAX_DATA_BYTES:
            raise DatasetError(f"{source}: larger than the limit of {MAX_DATA_BYTES:,} bytes")
        if len(raw) > MAX_LINE_BYTES:
            raise DatasetError(f"{source}: line {line_no}: longer than the limit of {MAX_LINE_BYTES:,} bytes")
        try:
            # A byte-order mark is only meaningful (and tolerated) at the start of the file.
            yield raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{source}: line {line_no}: not valid UTF-8 (byte {exc.start + 1})") from None


def _jsonl(stream: BinaryIO, source: str, make: Callable[[str, object], E], lines: list[int]) -> list[E]:
    """The examples of a JSON Lines file; the line of each is appended to `lines`."""
    examples: list[E] = []
    for line_no, text in enumerate(_lines(stream, source), start=1):
        if not text.strip():
            continue
        where = f"{source}: line {line_no}"
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON: {exc.msg} at column {exc.colno}") from None
        except RecursionError:
            raise DatasetError(f"{where}: not valid JSON: nested too deeply") from None
        except ValueError as exc:
            raise DatasetError(f"{where}: not valid JSON: {str(exc).splitlines()[0]}") from None
        if len(examples) == MAX_EXAMPLES:
            raise _too_many(source)
        examples.append(make(f"{where}: example {len(examples)}: ", item))
        lines.append(line_no)
    return examples


def _csv_header(row: list[str], source: str, line_no: int) -> tuple[int, int]:
    """Column positions of input and output; every column must be one of them. The cells are named by position
    unless they are known column names: the first line of a file that is not a dataset may be a secret."""
    names = [cell.strip() for cell in row]
    if not any(name in _CSV_INPUT_COLUMNS or name == "output" for name in names):
        raise DatasetError(
            f"{source}: line {line_no}: the first row must be a header with columns text_input and output; "
            f"none of its {len(names)} columns is one of them"
        )
    input_col = output_col = -1
    for col, name in enumerate(names):
        if name in _CSV_INPUT_COLUMNS:
            if input_col >= 0:
                raise DatasetError(
                    f"{source}: line {line_no}: more than one input column "
                    f"({_quote(names[input_col])} and {_quote(name)})"
                )
            input_col = col
        elif name == "output":
            if output_col >= 0:
                raise DatasetError(f"{source}: line {line_no}: column 'output' appears twice")
            output_col = col
        else:
            raise DatasetError(
                f"{source}: line {line_no}: unknown column {_column(name, col)}; "
                "columns are text_input (or input/textInput) and output"
            )
    if input_col < 0:
        raise DatasetError(f"{source}: line {line_no}: missing column 'text_input' (or input/textInput)")
    if output_col < 0:
        raise DatasetError(f"{source}: line {line_no}: missing column 'output'")
    return input_col, output_col


def _csv(stream: BinaryIO, source: str, make: Callable[[str, object], E], lines: list[int]) -> list[E]:
    reader = csv.reader(_lines(stream, source), strict=True)
    columns: tuple[int, int, int] | None = None  # input column, output column, header width
    examples: list[E] = []
    while True:
        first_line = reader.line_num + 1  # a quoted field may span lines: name the line the record starts on
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DatasetError(f"{source}: line {reader.line_num}: not valid CSV: {exc}") from None
        if not row:
            continue
        if columns is None:
            columns = (*_csv_header(row, source, first_line), len(row))
            continue
        where = f"{source}: line {first_line}: example {len(examples)}: "
        input_col, output_col, width = columns
        if len(row) != width:
            raise DatasetError(f"{where}has {len(row)} fields; the header has {width}")
        if len(examples) == MAX_EXAMPLES:
            raise _too_many(source)
        examples.append(make(where, {"text_input": row[input_col], "output": row[output_col]}))
        lines.append(first_line)
    if columns is None:
        raise DatasetError(f"{source}: the file is empty; a header row with text_input and output is required")
    return examples


class FileRefused(Exception):
    """A training file the opener will not read; the message says why, without the file's content."""


FileOpener = Callable[[str], BinaryIO]
"""Opens a training file for reading (raising FileRefused or OSError): `DataRoots.open` or `open_own_file`."""

# Non-blocking, so that opening a FIFO (which waits for a writer) or a device returns at once and is refused by
# the regular-file check instead of holding the reading thread forever; no controlling terminal, ever.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LINK_REFUSED = "the path has a symbolic link below the data root; links are not followed"


def _regular_file(fd: int, *, single_link: bool = False) -> BinaryIO:
    """`fd` as a stream if it is a regular file (checked on the open file itself, fstat); else closed, refused.
    `single_link`: refuse a file with other names too (a hard link's other name may lie outside the root)."""
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise FileRefused("not a regular file (a FIFO, device, socket or directory is never read)")
        if single_link and found.st_nlink > 1:
            raise FileRefused("the file has other hard links; copy it into the data root instead of linking it")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_own_file(path: str) -> BinaryIO:
    """A file named by the person running a command, with that person's own rights: `tunekeeper submit`'s."""
    return _regular_file(os.open(path, _OPEN_FLAGS))


@dataclass(frozen=True, slots=True)
class DataRoots:
    """The directories the daemon reads training files from (`[data] roots`), and only those.

    A producer names a file by its absolute path; it is opened by walking from the root's directory one
    component at a time, each opened relative to its parent's descriptor with O_NOFOLLOW, so a symbolic link
    anywhere below the root is refused, not followed. This is chosen over resolving the path and checking that
    it stays inside the root because a check on a resolved path and the open that follows it are two steps: a
    producer able to write below the root could swap a directory for a link in between. Descriptors pin what
    was checked. `..` is refused outright. A hard link is a file, not a path, so no walk can see where its other
    names are: a file with more than one link is refused too.
    """

    roots: tuple[str, ...]

    def open(self, path: str) -> BinaryIO:
        if not self.roots:
            raise FileRefused(
                "no data roots are configured ([data] roots), so the daemon reads no training files: "
                "put the examples in training_data, or ask the operator for a data root"
            )
        if not path.startswith("/"):
            raise FileRefused("must be an absolute path under a data root ([data] roots)")
        parts = PurePosixPath(path).parts[1:]
        if ".." in parts:
            raise FileRefused("'..' is not allowed in a training file's path")
        root, below = self._root_of(parts)
        if root is None or not below:
            raise FileRefused("not under a data root ([data] roots); the daemon reads training files only there")
        directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the operator's path, as given
        try:
            for name in below[:-1]:
                try:
                    inner = os.open(name, _DIRECTORY_FLAGS, dir_fd=directory)
                except NotADirectoryError:  # with O_DIRECTORY, what O_NOFOLLOW refuses says "not a directory"
                    if stat.S_ISLNK(os.lstat(name, dir_fd=directory).st_mode):
                        raise FileRefused(_LINK_REFUSED) from None
                    raise
                os.close(directory)
                directory = inner
            fd = os.open(below[-1], _OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=directory)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
                raise FileRefused(_LINK_REFUSED) from None
            raise
        finally:
            os.close(directory)
        return _regular_file(fd, single_link=True)

    def _root_of(self, parts: Sequence[str]) -> tuple[str | None, tuple[str, ...]]:
        """The longest root the path lies in, and the path's components below it."""
        best: tuple[str, ...] | None = None
        for root in self.roots:
            root_parts = PurePosixPath(root).parts[1:]
            if tuple(parts[: len(root_parts)]) == root_parts and (best is None or len(root_parts) > len(best)):
                best = root_parts
        if best is None:
            return None, ()
        return "/" + "/".join(best), tuple(parts[len(best) :])


def _from_file(
    training_file: object,
    make: Callable[[str, object], E],
    files: FileOpener,
    lines: list[int] | None = None,
) -> list[E]:
    if not isinstance(training_file, str):
        raise DatasetError(f"training_file must be a path (a string), got {_show(training_file)}")
    path_text = training_file if training_file.isprintable() else _quote(training_file, clip=1000)
    source = f"training_file {path_text}"
    if not training_file.strip():
        raise DatasetError("training_file is empty; it must be a path to a .jsonl or .csv file")
    suffix = Path(training_file).suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise DatasetError(f"{source}: unsupported file type {_quote(suffix or '(none)')}; use .jsonl or .csv")
    try:
        with files(training_file) as stream:
            read = _jsonl if suffix == ".jsonl" else _csv
            examples = read(stream, source, make, lines if lines is not None else [])
    except FileRefused as exc:
        raise DatasetError(f"{source}: {exc}") from None
    except OSError as exc:
        raise DatasetError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # DatasetError is one; the rest come from open(), e.g. a NUL byte in the path
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{source}: cannot read: {exc}") from None
    if not examples:
        raise DatasetError(f"{source}: no examples")
    return examples


def examples_json(examples: Iterable[Example]) -> list[dict[str, Any]]:
    """Examples as the `training_data` column holds them (what `load_dataset` reads back to the same examples):
    pairs as text_input/output, conversations in Vertex AI's contents form."""
    found: list[dict[str, Any]] = []
    for example in examples:
        if isinstance(example, Conversation):
            item: dict[str, Any] = {
                "contents": [{"role": t.role, "parts": [{"text": p} for p in t.parts]} for t in example.turns]
            }
            if example.system_instruction:
                item["systemInstruction"] = {"parts": [{"text": p} for p in example.system_instruction]}
            found.append(item)
        else:
            found.append({"text_input": example.text_input, "output": example.output})
    return found


# --- public interface --------------------------------------------------------------------------------------------


def load_examples(
    training_data: object, training_file: str | None, files: FileOpener = open_own_file
) -> list[TrainingExample]:
    """Pairs within the Gemini API's limits, from JSON (parsed or text) or the file named by `training_file`,
    opened by `files` (by default with the caller's own rights: the CLI's files)."""
    if training_data is not None and training_file is not None:
        raise DatasetError("give training_data or training_file, not both")
    if training_data is not None:
        return _inline("training_data", training_data, allow_empty=False, make=_example)
    if training_file is not None:
        return _from_file(training_file, _example, files)
    raise DatasetError("no training data: set training_data or training_file")


def load_dataset(training_data: object, training_file: object, *, files: FileOpener) -> Dataset:
    """A job's training data as the daemon sends it: pairs or `contents` conversations from `training_data`
    (JSON) or a .jsonl/.csv `training_file` opened by `files`, or a `gs://` training file, used where it is (not
    read here, nor confined to a data root: it is not a local file)."""
    if training_data is not None and training_file is not None:
        raise DatasetError("give training_data or training_file, not both")
    if training_data is not None:
        examples = _inline("training_data", training_data, allow_empty=False, make=_any_example)
        return Dataset("training_data", tuple(examples))
    if training_file is None:
        raise DatasetError("no training data: set training_data or training_file")
    if isinstance(training_file, str) and training_file.startswith("gs://"):
        return _in_storage(training_file)
    lines: list[int] = []
    examples = _from_file(training_file, _any_example, files, lines)
    return Dataset(_file_source(training_file), tuple(examples), tuple(lines))


def _file_source(training_file: object) -> str:
    assert isinstance(training_file, str)  # _from_file checked it
    return f"training_file {training_file if training_file.isprintable() else _quote(training_file, clip=1000)}"


def _in_storage(uri: str) -> Dataset:
    """A training file already in Cloud Storage: its shape only; whether it exists is the backend's to ask."""
    if not uri.isprintable() or len(uri.encode()) > 2048:
        raise DatasetError("training_file: not a usable gs:// URI (control characters, or too long)")
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not bucket or not name or name.endswith("/"):
        raise DatasetError(f"training_file {uri}: must name an object, gs://bucket/path/file.jsonl")
    return Dataset(f"training_file {uri}", uri=uri)


def load_eval_pairs(eval_data: object) -> list[TrainingExample]:
    """Pairs to test the finished model with; same rules as inline training data. None or [] means none."""
    if eval_data is None:
        return []
    return _inline("eval_data", eval_data, allow_empty=True, make=_example)


def check_eval_limits(pairs: Sequence[TrainingExample], *, max_pairs: int, max_input_chars: int) -> None:
    """What one job may ask of the service to test its model: at most `max_pairs` generate calls, and inputs of at
    most `max_input_chars` in all. DatasetError naming the limit and its setting otherwise."""
    if len(pairs) > max_pairs:
        raise DatasetError(f"eval_data has {len(pairs):,} pairs; the limit is {max_pairs:,} (eval.max_pairs)")
    total = sum(len(pair.text_input) for pair in pairs)
    if total > max_input_chars:
        raise DatasetError(
            f"eval_data's inputs have {total:,} characters in all; the limit is {max_input_chars:,} "
            "(eval.max_input_chars)"
        )


def _finite(value: int | float | Decimal) -> bool:
    """Infinities and NaNs are never valid; a Decimal NaN would even raise on comparison."""
    if isinstance(value, Decimal):
        return value.is_finite()
    return isinstance(value, int) or math.isfinite(value)


def _as_int(field: str, value: object, bounds: tuple[int, int]) -> int | None:
    if value is None:
        return None
    low, high = bounds
    rule = f"{field} must be a whole number from {low} to {high}"
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise DatasetError(f"{rule}, got {_show(value)}")
    # Range before int(): converting a huge float or Decimal could be slow or fail.
    if not _finite(value) or not low <= value <= high or value != int(value):
        raise DatasetError(f"{rule}, got {_show(value)}")
    return int(value)


def _as_rate(field: str, value: object, high: float) -> float | None:
    if value is None:
        return None
    rule = f"{field} must be a number greater than 0 and at most {high:g}"
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise DatasetError(f"{rule}, got {_show(value)}")
    # A tiny Decimal can round to 0.0 as a float, so the float is checked too.
    if not _finite(value) or not 0 < value <= high or not float(value) > 0:
        raise DatasetError(f"{rule}, got {_show(value)}")
    return float(value)


def validate_request(
    display_name: object,
    epoch_count: object,
    batch_size: object,
    learning_rate: object,
    learning_rate_multiplier: object,
    tuned_model_id: object,
    *,
    max_display_name_chars: int = MAX_DISPLAY_NAME_CHARS,
) -> TuningRequest:
    """A job's request columns, checked against the service's rules; None means "the service's default".

    The display name's limit is the service's (the backend's `max_display_name_chars`); the default is the Gemini
    API's, the stricter one."""
    if display_name is None:
        raise DatasetError("display_name is required")
    if not isinstance(display_name, str):
        raise DatasetError(f"display_name must be a string, got {_show(display_name)}")
    if not display_name.strip():
        raise DatasetError("display_name is empty")
    if len(display_name) > max_display_name_chars:
        raise DatasetError(f"display_name is {len(display_name):,} characters; the limit is {max_display_name_chars}")
    epochs = _as_int("epoch_count", epoch_count, EPOCH_COUNT_RANGE)
    batch = _as_int("batch_size", batch_size, BATCH_SIZE_RANGE)
    rate = _as_rate("learning_rate", learning_rate, MAX_LEARNING_RATE)
    multiplier = _as_rate("learning_rate_multiplier", learning_rate_multiplier, MAX_LEARNING_RATE_MULTIPLIER)
    if rate is not None and multiplier is not None:
        raise DatasetError("set learning_rate or learning_rate_multiplier, not both")
    if tuned_model_id is not None:
        if not isinstance(tuned_model_id, str):
            raise DatasetError(f"tuned_model_id must be a string, got {_show(tuned_model_id)}")
        if not _TUNED_MODEL_ID_RE.fullmatch(tuned_model_id):
            raise DatasetError(
                f"tuned_model_id {_quote(tuned_model_id)} is not a valid id: lowercase letters, digits and '-', "
                "starting with a letter, not ending with '-', at most 40 characters"
            )
    return TuningRequest(
        display_name=display_name,
        epoch_count=epochs,
        batch_size=batch,
        learning_rate=rate,
        learning_rate_multiplier=multiplier,
        tuned_model_id=tuned_model_id,
    )
