"""The third held-out corpus (bench/pii_fresh.py): deterministic, exact, valid and new."""

from __future__ import annotations

import functools
from collections import Counter

from bench.pii_corpus import Sample
from bench.pii_fresh import (
    EXPECTED_SPANS,
    N_TEXTS,
    PHONE_FORMATS,
    TYPES,
    _build,
    build_fresh_corpus,
    check_spans,
    full_name,
    iban_ok,
    load_people,
    load_templates,
    luhn_ok,
    name_clashes,
    ssn_ok,
)


@functools.cache
def _fresh() -> list[Sample]:
    return build_fresh_corpus()


def test_the_corpus_is_deterministic_and_the_seed_matters() -> None:
    first = _fresh()
    assert first == build_fresh_corpus()
    assert [s.text for s in build_fresh_corpus(1)] != [s.text for s in first]


def test_every_span_is_exact_typed_valid_and_alone() -> None:
    samples, stats = _build()
    assert len(samples) == N_TEXTS
    assert check_spans(samples, stats, "fresh") == set(TYPES)


def test_pattern_checks_reject_bad_values() -> None:
    assert not luhn_ok("4111 1111 1111 1112")
    assert not iban_ok("DE00 1234 5678 9012 3456 78")
    assert not ssn_ok("666-12-3456") and not ssn_ok("123-00-4567") and not ssn_ok("912-34-5678")


def test_counts_match_the_docstring() -> None:
    samples, stats = _build()
    spans = Counter(g.entity_type for s in samples for g in s.spans)
    assert dict(spans) == EXPECTED_SPANS
    people = load_people()
    assert len(people) == 1050
    assert len({p.culture for p in people}) == 207
    assert len(stats.people) == len(people)  # everyone is used
    templates = load_templates()
    assert len([t for t in templates if t.style not in ("filler", "late")]) == 240
    assert len({t.style for t in templates} - {"filler", "late"}) == 16
    assert stats.paragraphs == 180
    assert stats.trap_texts >= 0.2 * len(samples)
    assert 0 < stats.no_pii_texts < 0.25 * len(samples)
    assert len(stats.phone_regions) >= 50
    assert set(stats.phone_formats) == set(PHONE_FORMATS)


def test_people_are_unique_and_varied() -> None:
    people = load_people()
    assert len({(p.given, p.family) for p in people}) == len(people)
    assert {p.order for p in people} == {"gf", "fg", "mono"}
    assert len({p.group for p in people}) >= 15
    text = " ".join(full_name(p) for p in people)
    for particle in (" van ", " de la ", " bin ", " Ó ", " ter ", " zu ", " al-", "Mac", "O'", "N'", "-"):
        assert particle.lower() in text.lower(), particle


def test_paragraphs_are_long_and_name_the_person_late() -> None:
    paragraphs = [s for s in _fresh() if s.source == "fresh/paragraph"]
    assert paragraphs
    for s in paragraphs:
        assert 100 <= len(s.text.split()) <= 250, len(s.text.split())
        names = [g for g in s.spans if g.entity_type == "PERSON"]
        assert names and names[0].start > len(s.text) // 2


def test_people_are_disjoint_from_the_other_held_out_corpora() -> None:
    """No fresh person's name is in heldout or unseen; only lone name parts may recur.

    A given name or a family name on its own ("Nadia", "Ms Diallo") is shared by many
    people, so such strings may occur in the other corpora too; anything longer may not.
    """
    from bench.pii_heldout import build_heldout_corpus
    from bench.pii_unseen import build_unseen_corpus

    clashes, shared = name_clashes(load_people(), _fresh(), build_unseen_corpus() + build_heldout_corpus())
    assert not clashes, clashes
    assert not shared, shared
