"""The second held-out corpus (bench/pii_unseen.py): deterministic, with exact, valid spans."""

from __future__ import annotations

import phonenumbers

from bench.pii_unseen import (
    TYPES,
    WESTERN_GROUPS,
    _build,
    build_unseen_corpus,
    check_sample,
    iban_ok,
    load_people,
    load_templates,
    luhn_ok,
)


def test_the_corpus_is_deterministic_and_the_seed_matters() -> None:
    first = build_unseen_corpus()
    assert first == build_unseen_corpus(9090)
    assert [s.text for s in build_unseen_corpus(1)] != [s.text for s in first]


def test_every_span_is_exact_typed_and_alone() -> None:
    samples = build_unseen_corpus()
    assert 1400 <= len(samples) <= 1600
    seen = set()
    for sample in samples:
        check_sample(sample)  # in range, trimmed, known type, no overlaps
        assert sample.source.startswith("unseen/")
        for span in sample.spans:
            value = sample.text[span.start : span.end]
            seen.add(span.entity_type)
            if span.entity_type == "CREDIT_CARD":
                assert luhn_ok(value), value
            elif span.entity_type == "IBAN_CODE":
                assert iban_ok(value), value
            elif span.entity_type == "PHONE_NUMBER" and value.startswith("+"):
                assert phonenumbers.is_valid_number(phonenumbers.parse(value)), value
            elif span.entity_type == "PERSON":
                assert not value.endswith(("'s", "\u2019s")), value
                assert not value.startswith("@"), value
    assert seen == set(TYPES)


def test_people_templates_and_traps_meet_the_brief() -> None:
    people = load_people()
    assert len({(p.given, p.family) for p in people}) == len(people)
    templates = load_templates()
    assert len(templates) >= 150
    assert len({t.style for t in templates}) >= 16
    samples, stats, _ = _build(9090)
    used = [people[i] for i in stats.people]
    assert len(used) >= 600
    assert len({p.culture for p in used}) >= 40
    assert sum(p.group not in WESTERN_GROUPS for p in used) * 2 >= len(used)
    assert stats.trap_texts >= 0.3 * len(samples)
    assert stats.name_like_trap_texts >= 0.3 * len(samples)
    assert len(stats.phone_regions) >= 30
    assert set(stats.phone_formats) == {"national", "international", "e164"}
