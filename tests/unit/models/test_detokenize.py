"""Incremental detokenization: text arrives per token, split characters are held back, and
the pieces join to what decoding the whole answer at once gives."""

from __future__ import annotations

import threading

import pytest

from appliance.models.chat import HFDetokenizer
from tests.unit.models import support

TEXTS = [
    "Plain ASCII, with spaces and punctuation!",
    "Café naïve façade — 東京 🙂🎉 done.",
    "  leading spaces\nand\ttabs  ",
]


@pytest.fixture(scope="module")
def tokenizer(request: pytest.FixtureRequest) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(support.smollm2_dir(support.store_root(request.config))))


@pytest.mark.slow
@pytest.mark.parametrize("text", TEXTS)
def test_pieces_join_to_the_whole_decode_and_never_hold_a_broken_character(tokenizer: object, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    detok = HFDetokenizer(tokenizer, threading.Lock())
    pieces = [detok.push(token) for token in ids]
    pieces.append(detok.flush())
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)  # type: ignore[attr-defined]
    assert not any("\ufffd" in p for p in pieces)
    assert sum(1 for p in pieces if p) > len(ids) // 3  # text flows token by token, not at the end
