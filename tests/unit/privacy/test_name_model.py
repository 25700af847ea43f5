"""The name tagger's pieces: casing features, span decoding, adapter loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from appliance.errors import ConfigError
from appliance.privacy.name_model import NAME_MODEL_DIR, NameModel, NameTagger, case_ids, decode_spans, merge_adapter


def _case(text: str, word: str) -> int:
    start = text.index(word)
    return case_ids(text, [(start, start + len(word))])[0]


@pytest.mark.parametrize(
    ("text", "word", "same_as"),
    [
        ("ask Anna now", "Anna", ("ask Berg now", "Berg")),
        ("ask ANNA now", "ANNA", ("ask BERG now", "BERG")),
        ("ask anna now", "anna", ("ask berg now", "berg")),
        ("Anna asked", "Anna", ("Berg asked", "Berg")),
        ("ask J. Berg", "J", ("ask K. Berg", "K")),
    ],
)
def test_when_two_words_have_the_same_shape_and_place_then_their_casing_class_is_the_same(
    text: str, word: str, same_as: tuple[str, str]
) -> None:
    assert _case(text, word) == _case(*same_as)


def test_when_casing_or_position_differs_then_the_casing_class_differs() -> None:
    classes = {
        _case("ask Anna now", "Anna"),
        _case("ask ANNA now", "ANNA"),
        _case("ask anna now", "anna"),
        _case("Anna asked", "Anna"),
        _case("ask J. Berg", "J"),
        _case("room 42", "42"),
        _case("a - b", "-"),
    }
    assert len(classes) == 7


def test_when_a_token_is_a_piece_of_a_word_then_it_takes_the_whole_words_casing() -> None:
    text = "ask Mokoena now"
    start = text.index("Mokoena")
    assert case_ids(text, [(start, start + 3), (start + 3, start + 7)]) == [_case(text, "Mokoena")] * 2


def test_when_a_token_is_special_then_its_class_is_zero() -> None:
    assert case_ids("Anna", [(0, 0), (0, 4), (0, 0)])[::2] == [0, 0]


def _tokens(text: str, probs: dict[str, tuple[float, float]]) -> list[tuple[int, int, float, float]]:
    """Whitespace and punctuation tokens of ``text`` with (P(begin), P(inside)) by token text."""
    import re

    return [(m.start(), m.end(), *probs.get(m.group(), (0.0, 0.0))) for m in re.finditer(r"\w+|[^\w\s]", text)]


@pytest.mark.parametrize(
    ("text", "probs", "spans"),
    [
        ("ask Anna Berg now", {"Anna": (0.9, 0.05), "Berg": (0.1, 0.8)}, ["Anna Berg"]),
        (
            "ask Marie-Hélène Dufresne",
            {"Marie": (0.9, 0), "Hélène": (0, 0.9), "Dufresne": (0, 0.9)},
            ["Marie-Hélène Dufresne"],
        ),
        (
            "to Ana Lima Tom Berg",
            {"Ana": (0.9, 0), "Lima": (0, 0.9), "Tom": (0.9, 0), "Berg": (0, 0.9)},
            ["Ana Lima", "Tom Berg"],
        ),
        ("Anna, Ben", {"Anna": (0.9, 0), "Ben": (0.9, 0)}, ["Anna", "Ben"]),
        ("ask Anna and Ben", {"Anna": (0.9, 0), "Ben": (0.9, 0), "and": (0.1, 0.1)}, ["Anna", "Ben"]),
        ("nothing here", {}, []),
    ],
)
def test_when_tokens_are_tagged_then_runs_of_name_tokens_become_spans(
    text: str, probs: dict[str, tuple[float, float]], spans: list[str]
) -> None:
    assert [text[s:e] for s, e, _ in decode_spans(text, _tokens(text, probs), 0.5)] == spans


def test_when_a_name_token_is_part_of_a_word_then_the_span_covers_the_whole_word() -> None:
    text = "ask Mokoena now"
    start = text.index("Mokoena")
    spans = decode_spans(text, [(start, start + 3, 0.9, 0.0), (start + 3, start + 7, 0.2, 0.1)], 0.5)
    assert [text[s:e] for s, e, _ in spans] == ["Mokoena"]


def test_when_the_adapter_holds_a_tensor_the_tagger_lacks_then_loading_fails() -> None:
    from appliance.privacy.name_model import load_encoder

    _, encoder = load_encoder(1)
    with pytest.raises(ConfigError, match="unknown tensor"):
        merge_adapter(NameTagger(encoder), {"surprise.weight": torch.zeros(1)}, 1.0)


def test_when_the_base_encoder_differs_from_the_trained_one_then_the_model_is_refused(tmp_path: Path) -> None:
    shutil.copytree(NAME_MODEL_DIR, tmp_path / "nm")
    config = json.loads((tmp_path / "nm" / "config.json").read_text())
    config["base_sha256"] = "0" * 64
    (tmp_path / "nm" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="differ"):
        NameModel(tmp_path / "nm")


def test_when_the_directory_holds_no_model_then_loading_fails_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no name model"):
        NameModel(tmp_path)


@pytest.fixture(scope="module")
def shipped() -> NameModel:
    return NameModel(dtype=torch.float32)


SENTENCES = [
    "confirm with Thandiwe Mokoena on +27 21 555 0147",
    "the quarterly numbers are in",
    "Dear Dr. Ikechukwu Nwosu, thank you for your letter.",
]


def test_when_the_fast_pass_runs_in_float32_then_it_matches_the_module_it_was_built_from(shipped: NameModel) -> None:
    from appliance.privacy.fast_encoder import FastTagger
    from appliance.privacy.name_model import case_ids

    enc = shipped._tokenizer(SENTENCES, padding=True, return_offsets_mapping=True, return_tensors="pt")
    case = torch.tensor(
        [case_ids(t, [(int(s), int(e)) for s, e in o]) for t, o in zip(SENTENCES, enc["offset_mapping"], strict=True)]
    )
    with torch.inference_mode():
        reference = shipped._model(enc["input_ids"], enc["attention_mask"], case)
        fast32 = FastTagger(shipped._model, torch.float32)(enc["input_ids"], case, enc["attention_mask"])
        fast16 = FastTagger(shipped._model, torch.bfloat16)(enc["input_ids"], case, enc["attention_mask"])
    real = enc["attention_mask"].bool()
    assert torch.allclose(fast32[real], reference[real], atol=1e-4)
    assert torch.equal(fast16[real].argmax(-1), reference[real].argmax(-1))


def test_when_texts_of_different_lengths_share_a_call_then_each_reads_as_if_alone(shipped: NameModel) -> None:
    together = shipped.token_probabilities(SENTENCES)
    alone = [shipped.token_probabilities([t])[0] for t in SENTENCES]
    for a, b in zip(together, alone, strict=True):
        assert [(s, e) for s, e, _, _ in a] == [(s, e) for s, e, _, _ in b]
        assert all(abs((pb + pi) - (qb + qi)) < 1e-4 for (_, _, pb, pi), (_, _, qb, qi) in zip(a, b, strict=True))
