"""Reading a fine-tuning dataset file: JSONL or CSV, one example per row, validated.

Two tasks, three row shapes:

    classification   {"text": ..., "label": ...}                      (JSONL or CSV columns text,label)
    generation       {"prompt": ..., "completion": ...}               (JSONL or CSV columns prompt,completion)
                     {"messages": [{"role": ..., "content": ...}, ...]}   (JSONL; the last message is the
                                                                         assistant's answer to learn)

Every problem is reported with its line (1-based, as an editor shows it) and field, and
says what is wrong, never what the line holds: the messages reach clients and terminals.
Up to :data:`MAX_ERRORS` problems are collected so a user fixes a file in one go.

What comes out (:class:`ParsedDataset`) holds the rows as :class:`Row` objects whose
``texts`` are what gets anonymized; :func:`encode_rows` writes the canonical JSONL the
appliance stores (sealed) and the worker reads back with :func:`decode_rows`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from appliance.errors import InvalidInput, InvalidRows

Task = Literal["classification", "generation"]
Format = Literal["jsonl", "csv"]
Shape = Literal["text,label", "prompt,completion", "messages"]
TASKS: tuple[Task, ...] = ("classification", "generation")
FORMATS: tuple[Format, ...] = ("jsonl", "csv")
ROLES = ("system", "user", "assistant")
MAX_ERRORS = 20
MAX_LABEL_CHARS = 100
MAX_LABELS = 1000
MAX_MESSAGES = 64
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_ .-]{0,63}$")
_SHAPES: dict[Shape, tuple[str, ...]] = {
    "text,label": ("text", "label"),
    "prompt,completion": ("prompt", "completion"),
    "messages": ("messages",),
}
_TASK_OF: dict[Shape, Task] = {
    "text,label": "classification",
    "prompt,completion": "generation",
    "messages": "generation",
}


@dataclass(frozen=True)
class Row:
    """One example. ``texts`` are the strings the privacy step anonymizes, in field order
    (text; prompt, completion; each message's content); ``fields`` names them for errors."""

    line: int
    shape: Shape
    texts: tuple[str, ...]
    fields: tuple[str, ...]
    label: str | None = None
    roles: tuple[str, ...] = ()

    def with_texts(self, texts: Sequence[str]) -> Row:
        return replace(self, texts=tuple(texts))

    def as_json(self) -> dict[str, Any]:
        if self.shape == "text,label":
            return {"text": self.texts[0], "label": self.label}
        if self.shape == "prompt,completion":
            return {"prompt": self.texts[0], "completion": self.texts[1]}
        return {"messages": [{"role": r, "content": c} for r, c in zip(self.roles, self.texts, strict=True)]}


@dataclass
class ParsedDataset:
    task: Task
    shape: Shape
    rows: list[Row] = field(default_factory=list)

    def label_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            if row.label is not None:
                counts[row.label] = counts.get(row.label, 0) + 1
        return dict(sorted(counts.items()))


@dataclass(frozen=True)
class Limits:
    max_rows: int
    max_text_chars: int


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, object]] = []
        self.more = False

    def add(self, line: int | None, field_name: str | None, message: str) -> None:
        if len(self.items) >= MAX_ERRORS:
            self.more = True
            return
        self.items.append({"line": line, "field": field_name, "message": message})

    @property
    def full(self) -> bool:
        return self.more

    def raise_if_any(self, what: str = "the dataset failed validation") -> None:
        if not self.items:
            return
        first = self.items[0]
        where = f"line {first['line']}" if first["line"] is not None else "the file"
        field_part = f", field {first['field']}" if first["field"] else ""
        more = f" (and {len(self.items) - 1}{'+' if self.more else ''} more problems)" if len(self.items) > 1 else ""
        raise InvalidRows(f"{what}: {where}{field_part}: {first['message']}{more}; nothing was stored", self.items)


def _field_label(name: object) -> str:
    """A field name as errors may quote it: identifiers only, never arbitrary text."""
    return repr(name) if isinstance(name, str) and _FIELD_NAME.fullmatch(name) else "a field"


def detect_format(filename: str | None, content_type: str | None) -> Format | None:
    """The format a file name or media type says, or None when neither does."""
    name = (filename or "").lower()
    media = (content_type or "").split(";")[0].strip().lower()
    if name.endswith((".jsonl", ".ndjson", ".json")) or media in (
        "application/jsonl",
        "application/x-ndjson",
        "application/x-jsonlines",
        "application/json",
    ):
        return "jsonl"
    if name.endswith(".csv") or media in ("text/csv", "application/csv"):
        return "csv"
    return None


def _decode(data: bytes, errors: _Errors) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        errors.add(data.count(b"\n", 0, exc.start) + 1, None, "the file is not UTF-8 text")
        errors.raise_if_any()
        raise AssertionError("unreachable") from None
    return text.removeprefix("\ufeff")


def _check_text(value: object, line: int, name: str, limits: Limits, errors: _Errors) -> str | None:
    if not isinstance(value, str):
        errors.add(line, name, "must be a string")
        return None
    if not value.strip():
        errors.add(line, name, "must not be empty")
        return None
    if "\x00" in value:
        errors.add(line, name, "must not contain NUL characters")
        return None
    if len(value) > limits.max_text_chars:
        errors.add(line, name, f"has {len(value)} characters; the limit is {limits.max_text_chars}")
        return None
    return value


def _check_label(value: object, line: int, errors: _Errors) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        errors.add(line, "label", "must be a string (or an integer)")
        return None
    label = str(value).strip()
    if not label:
        errors.add(line, "label", "must not be empty")
        return None
    if len(label) > MAX_LABEL_CHARS or any(ch in label for ch in "\n\r\t\x00"):
        errors.add(line, "label", f"must be one line of at most {MAX_LABEL_CHARS} characters")
        return None
    return label


def _shape_of(keys: Sequence[str]) -> Shape | None:
    present = set(keys)
    for shape, wanted in _SHAPES.items():
        if set(wanted) <= present:
            return shape
    return None


def _expected(task: Task | None, shape: Shape | None) -> str:
    if shape is not None:
        return " and ".join(_SHAPES[shape])
    if task == "classification":
        return "text and label"
    if task == "generation":
        return "prompt and completion, or messages"
    return "text and label, prompt and completion, or messages"


def _row(
    obj: dict[str, Any], line: int, task: Task | None, shape: Shape | None, limits: Limits, errors: _Errors
) -> Row | None:
    """One record as a Row, or None after reporting its problems. ``shape`` is the shape
    of the file's first row once known: every row must have it."""
    found = _shape_of(list(obj))
    if found is None or (shape is not None and found != shape) or (task is not None and _TASK_OF[found] != task):
        errors.add(line, None, f"expected the fields {_expected(task, shape)}")
        return None
    unknown = [k for k in obj if k not in _SHAPES[found]]
    if unknown:
        errors.add(line, None, f"unknown field {_field_label(unknown[0])} (expected {_expected(task, found)})")
        return None
    if found == "text,label":
        text = _check_text(obj["text"], line, "text", limits, errors)
        label = _check_label(obj["label"], line, errors)
        if text is None or label is None:
            return None
        return Row(line, found, (text,), ("text",), label=label)
    if found == "prompt,completion":
        prompt = _check_text(obj["prompt"], line, "prompt", limits, errors)
        completion = _check_text(obj["completion"], line, "completion", limits, errors)
        if prompt is None or completion is None:
            return None
        return Row(line, found, (prompt, completion), ("prompt", "completion"))
    return _chat_row(obj["messages"], line, limits, errors)


def _chat_row(messages: object, line: int, limits: Limits, errors: _Errors) -> Row | None:
    if not isinstance(messages, list) or not messages:
        errors.add(line, "messages", "must be a non-empty list of {role, content} objects")
        return None
    if len(messages) > MAX_MESSAGES:
        errors.add(line, "messages", f"has {len(messages)} messages; the limit is {MAX_MESSAGES}")
        return None
    roles: list[str] = []
    texts: list[str] = []
    names: list[str] = []
    ok = True
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            errors.add(line, where, "must be an object with exactly role and content")
            ok = False
            continue
        role = message["role"]
        if role not in ROLES:
            errors.add(line, f"{where}.role", f"must be one of {', '.join(ROLES)}")
            ok = False
            continue
        content = _check_text(message["content"], line, f"{where}.content", limits, errors)
        if content is None:
            ok = False
            continue
        roles.append(str(role))
        texts.append(content)
        names.append(f"{where}.content")
    if not ok:
        return None
    if roles[-1] != "assistant":
        errors.add(line, "messages", "the last message must be the assistant's answer to learn")
        return None
    if "user" not in roles:
        errors.add(line, "messages", "needs at least one user message")
        return None
    return Row(line, "messages", tuple(texts), tuple(names), roles=tuple(roles))


def _jsonl_records(text: str, errors: _Errors) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.add(number, None, f"is not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            errors.add(number, None, "must be a JSON object")
            continue
        yield number, obj


def _csv_records(text: str, errors: _Errors) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error:
        errors.add(1, None, "the header row is not valid CSV")
        return
    if header is None:
        return
    columns = [h.strip().lower() for h in header]
    if len(set(columns)) != len(columns):
        errors.add(1, None, "the header names a column twice")
        return
    if _shape_of(columns) is None:
        errors.add(1, None, "the header must name the columns text,label or prompt,completion")
        return
    end = reader.line_num
    while True:
        start = end + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            errors.add(reader.line_num, None, f"is not valid CSV ({exc})")
            return  # the reader cannot resynchronise after a broken quote
        end = reader.line_num
        if not record or all(not cell.strip() for cell in record):
            continue
        if len(record) != len(columns):
            errors.add(start, None, f"has {len(record)} columns; the header has {len(columns)}")
            continue
        yield start, dict(zip(columns, record, strict=True))


def parse_dataset(data: bytes, fmt: Format, task: Task | None, limits: Limits) -> ParsedDataset:
    """Parse and validate a whole file; raises :class:`InvalidRows` naming lines and fields,
    or :class:`InvalidInput` for a file that is empty or over the row limit."""
    errors = _Errors()
    text = _decode(data, errors)
    records = _jsonl_records(text, errors) if fmt == "jsonl" else _csv_records(text, errors)
    shape: Shape | None = None
    rows: list[Row] = []
    for seen, (line, obj) in enumerate(records, start=1):
        if seen > limits.max_rows:
            raise InvalidInput(
                f"the dataset has more than {limits.max_rows} rows, the policy's finetune.max_dataset_rows"
            )
        row = _row(obj, line, task, shape, limits, errors)
        if row is not None:
            shape = shape or row.shape
            rows.append(row)
        if errors.full:
            break
    errors.raise_if_any()
    if shape is None:
        raise InvalidInput("the dataset holds no rows")
    parsed = ParsedDataset(_TASK_OF[shape], shape, rows)
    if parsed.task == "classification":
        labels = parsed.label_counts()
        if len(labels) < 2:
            raise InvalidInput("a classification dataset needs at least two different labels")
        if len(labels) > MAX_LABELS:
            raise InvalidInput(f"a classification dataset may have at most {MAX_LABELS} labels")
    return parsed


def encode_rows(rows: Sequence[Row]) -> Iterator[bytes]:
    """The canonical stored form: one JSON object per line, keys sorted, UTF-8."""
    for row in rows:
        yield (json.dumps(row.as_json(), ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def decode_rows(data: bytes) -> list[dict[str, Any]]:
    """Rows as :func:`encode_rows` wrote them (the stored blob, already verified)."""
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line]
