"""The third blind held-out corpus (bench/pii_blind3.py): deterministic, exact, valid and new."""

from __future__ import annotations

import functools
import warnings
from collections import Counter

import pytest

from bench.pii_blind3 import (
    DATA_DIR,
    EXPECTED_SPANS,
    N_TEXTS,
    build_blind3_corpus,
    build_blind3_with_stats,
)
from bench.pii_corpus import Sample
from bench.pii_fresh import (
    PHONE_FORMATS,
    TYPES,
    WESTERN_GROUPS,
    Person,
    check_spans,
    load_lexicon,
    load_people,
    load_templates,
    missing_variety,
    name_clashes,
)

PIECES = ("filler", "late")


@functools.cache
def _blind3() -> list[Sample]:
    return build_blind3_corpus()


def _people() -> list[Person]:
    return load_people(DATA_DIR)


def test_the_corpus_is_deterministic_and_the_seed_matters() -> None:
    first = _blind3()
    assert first == build_blind3_corpus()
    assert [s.text for s in build_blind3_corpus(1)] != [s.text for s in first]


def test_every_span_is_exact_typed_valid_and_alone() -> None:
    samples, stats = build_blind3_with_stats()
    assert len(samples) == N_TEXTS
    assert check_spans(samples, stats, "blind3") == set(TYPES)


def test_counts_match_the_docstring() -> None:
    samples, stats = build_blind3_with_stats()
    spans = Counter(g.entity_type for s in samples for g in s.spans)
    assert dict(spans) == EXPECTED_SPANS
    people = _people()
    assert len(people) == 1172
    assert len({p.culture for p in people}) == 449
    assert len({p.group for p in people}) == 23
    assert len(stats.people) == len(people)  # everyone is used
    templates = load_templates(DATA_DIR)
    styled = [t for t in templates if t.style not in PIECES]
    assert len(styled) == 286
    assert sum(t.trap for t in styled) == 95
    assert len({t.style for t in styled}) == 26
    assert Counter(t.style for t in templates if t.style in PIECES) == {"filler": 61, "late": 28}
    assert stats.paragraphs == 180
    assert stats.trap_texts == 605
    assert stats.no_pii_texts == 211
    assert len(stats.phone_regions) >= 50
    assert set(stats.phone_formats) == set(PHONE_FORMATS)


def test_trap_and_no_pii_shares_are_as_stated() -> None:
    samples, stats = build_blind3_with_stats()
    assert 0.25 <= stats.trap_texts / len(samples) <= 0.50
    assert 0.10 <= stats.no_pii_texts / len(samples) <= 0.20
    styled = [t for t in load_templates(DATA_DIR) if t.style not in PIECES]
    assert 0.30 <= sum(t.trap for t in styled) / len(styled) <= 0.40
    # every style holds traps and plain templates alike
    for style in {t.style for t in styled}:
        traps = [t.trap for t in styled if t.style == style]
        assert 3 <= sum(traps) < len(traps) - 3, style
    no_pii = [s for s in samples if not s.spans]
    assert all(s.source != "blind3/paragraph" for s in no_pii)
    person_share = sum(1 for s in samples if any(g.entity_type == "PERSON" for g in s.spans)) / len(samples)
    assert 0.6 <= person_share <= 0.85, person_share


def test_lexicon_has_every_section_the_generator_uses() -> None:
    lex = load_lexicon(DATA_DIR)
    needed = {"city", "country", "street", "eponymous_place", "airport", "domain"}
    needed |= {"brand", "product", "eponym", "role", "dept"}
    assert needed <= set(lex)
    for name in needed:
        assert len(lex[name]) >= 20, name
        assert len(set(lex[name])) == len(lex[name]), name


def test_every_written_form_is_used() -> None:
    forms = {"full", "given", "family", "title", "tfull", "sg", "init", "caps", "lower", "lgiven", "poss", "formal"}
    text = "\n".join(t.text for t in load_templates(DATA_DIR))
    for form in forms:
        assert f":{form}}}" in text, form


def test_people_are_unique_and_varied() -> None:
    people = _people()
    assert len({(p.given, p.family) for p in people}) == len(people)
    assert {p.order for p in people} == {"gf", "fg", "mono"}
    assert {p.gender for p in people} == {"m", "f", "x"}
    assert len({p.group for p in people}) >= 20
    assert len({p.culture for p in people}) >= 300
    assert sum(p.group not in WESTERN_GROUPS for p in people) >= 0.8 * len(people)
    assert missing_variety(people) == []


def test_paragraphs_are_long_and_name_the_person_late() -> None:
    paragraphs = [s for s in _blind3() if s.source == "blind3/paragraph"]
    assert len(paragraphs) == 180
    for s in paragraphs:
        assert 100 <= len(s.text.split()) <= 250, len(s.text.split())
        names = [g for g in s.spans if g.entity_type == "PERSON"]
        assert names and names[0].start > len(s.text) // 2


def _check_disjoint(other_samples: list[Sample]) -> None:
    """No blind3 person's full name is a PERSON string of ``other_samples``; only lone name
    parts (a given or a family name, with or without a title) may recur."""
    clashes, shared = name_clashes(_people(), _blind3(), other_samples)
    assert not clashes, clashes
    assert not shared, shared


def test_people_are_disjoint_from_the_fresh_corpus() -> None:
    from bench.pii_fresh import build_fresh_corpus

    _check_disjoint(build_fresh_corpus())


def test_people_are_disjoint_from_the_blind_corpus() -> None:
    from bench.pii_blind import build_blind_corpus

    _check_disjoint(build_blind_corpus())


def test_people_are_disjoint_from_the_blind2_corpus() -> None:
    from bench.pii_blind2 import build_blind2_corpus

    _check_disjoint(build_blind2_corpus())


def test_people_are_disjoint_from_the_unseen_and_heldout_corpora() -> None:
    from bench.pii_heldout import build_heldout_corpus
    from bench.pii_unseen import build_unseen_corpus

    _check_disjoint(build_unseen_corpus() + build_heldout_corpus())


def test_people_are_disjoint_from_the_own_corpus() -> None:
    pytest.importorskip("presidio_evaluator")
    from bench.pii_corpus import build_corpus

    with warnings.catch_warnings():  # the evaluator's own deprecation warnings are not ours
        warnings.simplefilter("ignore")
        own = build_corpus()
    _check_disjoint(own)
