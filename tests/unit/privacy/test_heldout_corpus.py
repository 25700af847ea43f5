"""The held-out PII corpus (bench/pii_heldout.py) builds the same way every time, and its gold
spans cover exactly the values that were inserted."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.pii_heldout import (
    GOLD_TYPES,
    HELDOUT_SOURCES,
    HeldoutItem,
    build_heldout_corpus,
    build_heldout_items,
    check_spans,
    load_names,
    load_templates,
    self_check,
)


@pytest.fixture(scope="module")
def items() -> list[HeldoutItem]:
    return build_heldout_items()


def test_same_seed_same_corpus(items: list[HeldoutItem]) -> None:
    again = build_heldout_corpus()
    assert [(s.text, s.spans, s.source) for s in again] == [
        (i.sample.text, i.sample.spans, i.sample.source) for i in items
    ]
    other = build_heldout_corpus(seed=7)
    assert [s.text for s in other] != [s.text for s in again]


def test_spans_are_the_inserted_values(items: list[HeldoutItem]) -> None:
    assert self_check(items, rebuild=False) == []  # the test above rebuilds
    assert check_spans([i.sample for i in items]) == []


def test_size_sections_and_types(items: list[HeldoutItem]) -> None:
    corpus = [i.sample for i in items]
    assert 1500 <= len(corpus) <= 2000
    assert {s.source for s in corpus} == set(HELDOUT_SOURCES)
    counts = Counter(g.entity_type for s in corpus for g in s.spans)
    assert set(counts) == set(GOLD_TYPES)
    assert sum(i.trap for i in items) >= len(items) // 4


def test_names_and_templates_cover_what_the_brief_asks() -> None:
    people = load_names()
    assert len({p.full for p in people}) >= 700
    assert len({p.culture for p in people}) >= 40
    western = sum(p.group == "western" for p in people)
    assert western < len(people) / 2
    assert len({t.text for t in load_templates()}) >= 200
