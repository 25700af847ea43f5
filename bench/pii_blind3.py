"""A sixth, blind held-out PII corpus ("blind3"), measured for reporting only.

Who and how: written on 2026-12-01, after the corpora fresh (bench/pii_fresh.py), blind
(bench/pii_blind.py) and blind2 (bench/pii_blind2.py), by a helper session that was asked to
write it blind. Its author read only bench/pii_fresh.py (the generator reused here, whose
docstring defines the data format, the slots, the written forms and the labelling
conventions), bench/pii_blind2.py and tests/unit/privacy/test_blind2_corpus.py (whose shape
this module and its test copy), the ``Sample`` and ``GoldSpan`` definitions of
bench/pii_corpus.py and pyproject.toml. It did not read the detector (appliance/), the data
or templates of any other corpus (bench/blind/, bench/blind2/, bench/fresh/, bench/unseen/,
bench/heldout/, the rest of bench/pii_corpus.py), bench/pii_quality.py, the docs, the
changelog, the README, other tests or the commit history, and it never ran the detector, the
server or any bench other than this module (the test builds the other corpora only to
compare PERSON strings). Every name, template and word list was written from general
knowledge (no Faker, no name generator, no package's name lists). Nothing in it may be used
to build, train or tune a detector: it is measured for reporting only, and once a result on
it has been looked at to change the detector, it is no longer blind.

Data (bench/blind3/) in exactly the format described in bench/pii_fresh.py's docstring,
built by its generator with the same slots, written forms (all twelve are used) and pattern
values, and labelled by the same conventions:

* ``people.txt``: 1,172 made-up people of 449 cultures in 23 world regions; 1,042 of them
  (89%) from outside Western, Northern and Southern Europe, North America and Oceania (West,
  Central, East, Southern and North African, Middle Eastern, Caucasian, Central, South,
  Southeast and East Asian, Eastern European, Siberian and Arctic, Latin American,
  Caribbean, Pacific Island, Indian Ocean and Indigenous North American cultures); given-name
  first, family-name first (Chinese, Japanese, Korean, Hungarian, Vietnamese, Khmer...) and
  single names (Javanese, Burmese, Mongolian, Afghan...): 1,076, 67 and 29 of them; with particles (van, van der, ter,
  ten, zu, von, af, de la, ap, Ó, Ní, Mac, bin, binti, anak, ole, Ould, Mint, Ag, al-, dos,
  da, i, í), hyphens, apostrophes (O', N', D', Ng'), the okina, diacritics, initials,
  honorific titles per culture (Chief, Alhaji, Hajiya, Nana, Togbe, Ato, W/ro, Bwana, Bi,
  Pak, Bu, Daw, U, Khun, Encik, Puan, Sardar, Smt., Thiru, Dasho, Herr, Frau, Sig.ra...) and
  names that are also ordinary words (Hope, Will, Grant, Mason, Summer, Fields, Bill,
  Hunter, Baker, Shepherd, Precious, Patience, Goodluck, Joy, Cherry, Deer, Flowers).
* ``templates.txt``: 286 templates in 26 business styles, 95 of them traps (33%), plus 61
  ``[filler]`` (10 of them traps) and 28 ``[late]`` sentences. The styles: team chat,
  e-mail signatures, e-mail headers and forwards, web forms, voicemail transcripts, support
  tickets, meeting minutes, CRM notes, dispatch and manifests, invoices and payments, HR
  onboarding, ops logs and alerts, contracts, clinic administration, travel and expenses,
  facilities, marketing briefs, customer surveys, vendor management, non-native English,
  structured records (JSON, CSV, YAML, XML, tables), prompts to an AI assistant, audit
  findings, training administration, internal newsletters and field reports. The traps are
  full of capitalised words that are not people: companies and brands (also those named
  after people), software and consumer products, eponymous laws, diseases, tests, units,
  holidays, prizes and dishes, places and airports named after people (LOCATION), rooms and
  printers with given names, field labels ("Bill To:", "Attn:", "Owner:"), weekdays,
  months, and ordinary words that are also names (Will, Grant, Hope, Bill, Mason, Baker,
  Summer, Grace).
* ``lexicon.txt``: the author's own cities, countries, streets, eponymous places and
  airports (LOCATION), companies, products and eponyms (unlabelled), roles, departments and
  e-mail domains.

Its people are new: no blind3 person's full name (in any of its written arrangements) is a
PERSON string of the fresh, blind, blind2, unseen, heldout or own corpora; only a lone given
or family name, with or without a title, may be shared (checked by
tests/unit/privacy/test_blind3_corpus.py; 105 people whose full names the first draft shared
with them were renamed, seeing only the colliding names, and some 55 more whose names came
too near real public figures were changed while writing).

Counts at the default seed 31415 (checked by the test): 1,500 texts, 180 of them
100-250-word paragraphs (the generator's fixed 12% share); all 1,172 people used; 605 trap
texts (40%), 211 texts without any PII (14%), 1,177 texts (78%) naming a person; spans PERSON
1,506, LOCATION 532, PHONE_NUMBER 168, EMAIL_ADDRESS 167, IBAN_CODE 60, IP_ADDRESS 45,
CREDIT_CARD 41, US_SSN 23 (``EXPECTED_SPANS``). The seed 31415 is this corpus's own (fresh
uses 2718, blind2 27182).
``Sample.source`` is ``blind3/<style>``. Build with ``build_blind3_corpus(seed)``;
``python -m bench.pii_blind3`` checks every span and prints counts and a few samples.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.pii_corpus import Sample
from bench.pii_fresh import Stats, _build, check_and_describe

DATA_DIR = Path(__file__).with_name("blind3")
DEFAULT_SEED = 31415
N_TEXTS = 1500
SOURCE = "blind3"
EXPECTED_SPANS = {
    "PERSON": 1506,
    "LOCATION": 532,
    "PHONE_NUMBER": 168,
    "EMAIL_ADDRESS": 167,
    "IBAN_CODE": 60,
    "IP_ADDRESS": 45,
    "CREDIT_CARD": 41,
    "US_SSN": 23,
}


def build_blind3_with_stats(seed: int = DEFAULT_SEED) -> tuple[list[Sample], Stats]:
    """The corpus and the generator's statistics (people used, traps, phone regions...)."""
    return _build(seed, N_TEXTS, DATA_DIR, SOURCE)


def build_blind3_corpus(seed: int = DEFAULT_SEED) -> list[Sample]:
    """The third blind held-out corpus: ``N_TEXTS`` seeded texts with exact gold spans."""
    return build_blind3_with_stats(seed)[0]


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SEED
    check_and_describe(seed, DATA_DIR, SOURCE, EXPECTED_SPANS if seed == DEFAULT_SEED else None)


if __name__ == "__main__":
    main()
