"""A fourth, blind held-out PII corpus ("blind"), measured for reporting only.

Who and how: written on 2026-12-01, after all the other corpora (bench/pii_corpus.py,
bench/pii_heldout.py, bench/pii_unseen.py, bench/pii_fresh.py), by a helper session that
was asked to write it blind. Its author read only bench/pii_fresh.py (the generator reused
here, whose docstring defines the data format and the labelling conventions), the
``Sample`` and ``GoldSpan`` definitions of bench/pii_corpus.py, the test
tests/unit/privacy/test_fresh_corpus.py and pyproject.toml. It did not read the detector
(appliance/), the data or templates of any other corpus (bench/fresh/, bench/unseen/,
bench/heldout/, the rest of bench/pii_corpus.py), bench/pii_quality.py, the docs, the
changelog, the README, other tests or the commit history, and it never ran the detector or
a bench on this corpus. Every name, template and word list was written from general
knowledge (no Faker, no name generator, no package's name lists). Nothing in it may be used
to build, train or tune a detector: it is measured for reporting only, and once a result on
it has been looked at to change the detector, it is no longer blind.

Data (bench/blind/) in exactly the format described in bench/pii_fresh.py's docstring
(``people.txt`` with ``== culture | group | order [| titles]`` headers and ``g first /
second`` or ``g name`` persons; ``templates.txt`` with ``[style]`` sections, ``! `` trap
templates and the ``[filler]`` / ``[late]`` paragraph sentences; ``lexicon.txt`` with the
city, country, street, eponymous_place, airport, domain, brand, product, eponym, role and
dept sections), built by bench/pii_fresh.py's generator with the same slots, written forms
and pattern values, and labelled by the same conventions:

* ``people.txt``: 886 people of 254 cultures in 22 world regions; more than half from
  African, Middle Eastern, Caucasian, Central, South and Southeast Asian, Pacific, Arctic
  and Indigenous American cultures; with particles, hyphens, apostrophes, diacritics,
  initials, family-name-first orders and single names, and given or family names that are
  also ordinary words, places or companies.
* ``templates.txt``: 259 templates in 21 business styles, 116 of them traps (45%), plus 50
  ``[filler]`` and 25 ``[late]`` sentences.
* ``lexicon.txt``: the author's own places, eponymous places and airports (LOCATION),
  companies, products and eponyms (unlabelled), roles, departments and e-mail domains.

Its people are new: no blind person's full name (in any of its written arrangements) is a
PERSON string of the other corpora; only a lone given or family name, with or without a
title, may be shared (checked by tests/unit/privacy/test_blind_corpus.py against the fresh,
unseen, heldout and own corpora; 64 people whose full names the first draft shared with
them were renamed, seeing only the colliding names).

Counts at the default seed (checked by the test): 1,500 texts, 180 of them 100-250-word
paragraphs; all 886 people used; 724 trap texts (48%), 245 texts without any PII (16%);
spans PERSON 1,411, LOCATION 454, PHONE_NUMBER 182, EMAIL_ADDRESS 92, IP_ADDRESS 68,
IBAN_CODE 53, CREDIT_CARD 44, US_SSN 34 (``EXPECTED_SPANS``). ``Sample.source`` is
``blind/<style>``. Build with ``build_blind_corpus(seed)``; ``python -m bench.pii_blind``
checks every span and prints counts and a few samples.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.pii_corpus import Sample
from bench.pii_fresh import Stats, _build, check_and_describe

DATA_DIR = Path(__file__).with_name("blind")
DEFAULT_SEED = 31415
N_TEXTS = 1500
SOURCE = "blind"
EXPECTED_SPANS = {
    "PERSON": 1411,
    "LOCATION": 454,
    "PHONE_NUMBER": 182,
    "EMAIL_ADDRESS": 92,
    "IP_ADDRESS": 68,
    "IBAN_CODE": 53,
    "CREDIT_CARD": 44,
    "US_SSN": 34,
}


def build_blind_with_stats(seed: int = DEFAULT_SEED) -> tuple[list[Sample], Stats]:
    """The corpus and the generator's statistics (people used, traps, phone regions...)."""
    return _build(seed, N_TEXTS, DATA_DIR, SOURCE)


def build_blind_corpus(seed: int = DEFAULT_SEED) -> list[Sample]:
    """The blind held-out corpus: ``N_TEXTS`` seeded texts with exact gold spans."""
    return build_blind_with_stats(seed)[0]


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SEED
    check_and_describe(seed, DATA_DIR, SOURCE, EXPECTED_SPANS if seed == DEFAULT_SEED else None)


if __name__ == "__main__":
    main()
