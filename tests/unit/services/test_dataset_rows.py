"""Parsing and validating fine-tuning dataset files: every problem names its line and field,
never the content."""

from __future__ import annotations

import json

import pytest

from appliance.errors import InvalidInput, InvalidRows
from appliance.services.dataset_rows import Limits, decode_rows, detect_format, encode_rows, parse_dataset

LIMITS = Limits(max_rows=100, max_text_chars=200)


def jsonl(*rows: object) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()


CLASSIFICATION = jsonl({"text": "refund please", "label": "billing"}, {"text": "app crashes", "label": "technical"})


@pytest.mark.parametrize(
    ("data", "fmt", "task", "shape", "rows"),
    [
        (CLASSIFICATION, "jsonl", None, "text,label", 2),
        (CLASSIFICATION, "jsonl", "classification", "text,label", 2),
        (jsonl({"text": "a", "label": 1}, {"text": "b", "label": 2}), "jsonl", None, "text,label", 2),
        (jsonl({"prompt": "Hi", "completion": "Hello"}), "jsonl", None, "prompt,completion", 1),
        (
            jsonl({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}),
            "jsonl",
            "generation",
            "messages",
            1,
        ),
        (b'\xef\xbb\xbftext,label\nrefund please,billing\n\n"app, crashes",technical\n', "csv", None, "text,label", 2),
        (b"Prompt,Completion\r\nHi,Hello\r\n", "csv", None, "prompt,completion", 1),
        (b'text,label\n"two\nlines",a\nother,b\n', "csv", None, "text,label", 2),
    ],
)
def test_valid_files_parse_into_rows_of_one_shape(
    data: bytes, fmt: str, task: str | None, shape: str, rows: int
) -> None:
    parsed = parse_dataset(data, fmt, task, LIMITS)  # type: ignore[arg-type]
    assert parsed.shape == shape
    assert len(parsed.rows) == rows


@pytest.mark.parametrize(
    ("data", "fmt", "task", "line", "field", "message"),
    [
        (jsonl({"text": "a", "label": "x"}, "{not json"), "jsonl", None, 2, None, "is not valid JSON"),
        (jsonl({"text": "a", "label": "x"}, [1, 2]), "jsonl", None, 2, None, "must be a JSON object"),
        (jsonl({"text": "a", "label": "x"}, {"text": "", "label": "y"}), "jsonl", None, 2, "text", "must not be empty"),
        (
            jsonl({"text": "a", "label": "x"}, {"text": "b", "label": None}),
            "jsonl",
            None,
            2,
            "label",
            "must be a string",
        ),
        (
            jsonl({"text": "a", "label": "x"}, {"text": "b"}),
            "jsonl",
            None,
            2,
            None,
            "expected the fields text and label",
        ),
        (jsonl({"text": "a", "label": "x", "note": "n"}), "jsonl", None, 1, None, "unknown field 'note'"),
        (jsonl({"text": "a", "label": "x"}, {"prompt": "p", "completion": "c"}), "jsonl", None, 2, None, "expected"),
        (jsonl({"prompt": "p", "completion": "c"}), "jsonl", "classification", 1, None, "text and label"),
        (jsonl({"text": "a" * 201, "label": "x"}), "jsonl", None, 1, "text", "has 201 characters; the limit is 200"),
        (jsonl({"text": "a", "label": "x" * 101}), "jsonl", None, 1, "label", "one line of at most 100"),
        (jsonl({"messages": []}), "jsonl", None, 1, "messages", "non-empty list"),
        (
            jsonl({"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]}),
            "jsonl",
            None,
            1,
            "messages[1].role",
            "must be one of system, user, assistant",
        ),
        (
            jsonl({"messages": [{"role": "user", "content": "q"}]}),
            "jsonl",
            None,
            1,
            "messages",
            "the last message must be the assistant's",
        ),
        (
            jsonl({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}),
            "jsonl",
            None,
            1,
            "messages",
            "at least one user message",
        ),
        (b"text,label\na,x\nb\n", "csv", None, 3, None, "has 1 columns; the header has 2"),
        (b"body,label\na,x\n", "csv", None, 1, None, "the header must name the columns"),
        (b'text,label\na,x\n"open,y\n', "csv", None, 3, None, "is not valid CSV"),
        (b'{"text": "ok", "label": "a"}\n{"text": "caf\xe9", "label": "b"}', "jsonl", None, 2, None, "not UTF-8"),
    ],
)
def test_a_bad_row_is_refused_naming_its_line_and_field(
    data: bytes, fmt: str, task: str | None, line: int, field: str | None, message: str
) -> None:
    with pytest.raises(InvalidRows) as caught:
        parse_dataset(data, fmt, task, LIMITS)  # type: ignore[arg-type]
    first = caught.value.errors[0]
    assert (first["line"], first["field"]) == (line, field)
    assert message in str(first["message"])
    assert f"line {line}" in caught.value.detail


def test_errors_never_quote_the_content_of_the_line() -> None:
    secret = "anna.berg@example.org"
    data = jsonl({"text": secret, "label": "x", secret: 1}, {"text": secret, "label": {"x": secret}}, "{" + secret)
    with pytest.raises(InvalidRows) as caught:
        parse_dataset(data, "jsonl", None, LIMITS)
    assert secret not in caught.value.detail
    assert secret not in json.dumps(caught.value.errors)
    assert [e["line"] for e in caught.value.errors] == [1, 2, 3]


def test_errors_are_collected_up_to_a_cap_so_a_file_is_fixed_in_one_go() -> None:
    data = jsonl(*({"text": "", "label": "x"} for _ in range(50)))
    with pytest.raises(InvalidRows) as caught:
        parse_dataset(data, "jsonl", None, Limits(max_rows=1000, max_text_chars=100))
    assert len(caught.value.errors) == 20
    assert "more problems" in caught.value.detail


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "holds no rows"),
        (b"\n\n", "holds no rows"),
        (b"text,label\n", "holds no rows"),
        (jsonl({"text": "a", "label": "x"}, {"text": "b", "label": "x"}), "at least two different labels"),
        (jsonl(*({"text": "a", "label": str(i)} for i in range(101))), "more than 100 rows"),
    ],
)
def test_files_without_enough_rows_or_labels_or_with_too_many_rows_are_refused(data: bytes, message: str) -> None:
    fmt = "csv" if data.startswith(b"text,") else "jsonl"
    with pytest.raises(InvalidInput, match=message):
        parse_dataset(data, fmt, None, LIMITS)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("filename", "content_type", "expected"),
    [
        ("tickets.jsonl", None, "jsonl"),
        ("tickets.CSV", None, "csv"),
        (None, "application/x-ndjson", "jsonl"),
        (None, "text/csv; charset=utf-8", "csv"),
        ("tickets.txt", "application/octet-stream", None),
    ],
)
def test_the_format_comes_from_the_file_name_or_media_type(
    filename: str | None, content_type: str | None, expected: str | None
) -> None:
    assert detect_format(filename, content_type) == expected


def test_stored_rows_round_trip_in_canonical_form() -> None:
    parsed = parse_dataset(b"text,label\nrefund please,billing\nsmile \xf0\x9f\x99\x82,happy\n", "csv", None, LIMITS)
    stored = b"".join(encode_rows(parsed.rows))
    assert stored.count(b"\n") == 2
    assert decode_rows(stored) == [
        {"label": "billing", "text": "refund please"},
        {"label": "happy", "text": "smile \U0001f642"},
    ]
