"""The name model's training data and the train -> export -> load path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.privacy.name_training.corpus import examples
from appliance.privacy.name_training.people import HELD_OUT_LOCALES, build_pool, make_person

_HASH = """
import hashlib
from appliance.privacy.name_training.corpus import examples
from appliance.privacy.name_training.people import build_pool
pool = build_pool(locales=["en_US", "zu_ZA", "ru_RU", "ja_JP"], per_locale=60)
data = list(examples(400, seed=3, pool=pool))
print(hashlib.sha256("\\x00".join(e.text + repr(e.spans) for e in data).encode()).hexdigest())
"""


@pytest.fixture(scope="module")
def pool():  # type: ignore[no-untyped-def]
    return build_pool(locales=["en_US", "zu_ZA", "ru_RU", "ja_JP", "vi_VN"], per_locale=60)


def test_when_the_corpus_is_built_in_two_processes_then_it_is_the_same() -> None:
    runs = {
        subprocess.run([sys.executable, "-c", _HASH], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(runs) == 1


def test_every_labelled_name_is_a_non_empty_span_of_its_text_and_spans_never_overlap(pool) -> None:  # type: ignore[no-untyped-def]
    for example in examples(500, seed=5, pool=pool):
        last = -1
        for start, end in example.spans:
            assert 0 <= start < end <= len(example.text)
            value = example.text[start:end]
            assert value == value.strip() and value
            assert start >= last
            last = end


def test_names_come_in_many_forms_titles_and_post_nominals_inside_the_span(pool) -> None:  # type: ignore[no-untyped-def]
    import random

    rng = random.Random(11)
    written = [make_person(pool, rng).text for _ in range(2000)]
    assert any(w.startswith(("Dr", "Prof", "Mr", "Ms", "Sheikh", "Chief")) for w in written)
    assert any(w.endswith(("PhD", "Jr.", "MBA", "MD")) for w in written)
    assert any("-" in w for w in written)
    assert any(", " in w for w in written)
    assert len(set(written)) > 1500


def test_transliterated_names_are_in_latin_script(pool) -> None:  # type: ignore[no-untyped-def]
    for locale in ("ru_RU", "ja_JP"):
        assert all(n.isascii() for n in pool.given[locale][:50])


def test_the_held_out_locales_are_not_in_the_default_training_pool() -> None:
    from appliance.privacy.name_training import people

    trained = {*people._LATIN, *people._TRANSLITERATED, *people._ROMANIZED}
    assert not trained & set(HELD_OUT_LOCALES)


@pytest.mark.slow
def test_when_a_tiny_model_is_trained_then_its_export_loads_and_tags(tmp_path: Path, pool) -> None:  # type: ignore[no-untyped-def]
    from appliance.privacy.name_model import NameModel
    from appliance.privacy.name_training import train as training

    meta = training.train(
        tmp_path / "nm", n_examples=64, layers=1, batch_size=32, max_length=32, pool=pool, validation_examples=32
    )
    assert meta["history"][0]["epoch"] == 1
    model = NameModel(tmp_path / "nm")
    readings = model.read(["confirm with Thandiwe Mokoena on Monday"])
    assert len(readings) == 1 and readings[0].tokens
