"""A fifth, blind held-out PII corpus ("blind2"), measured for reporting only.

Who and how: written on 2026-12-01, after the corpora fresh (bench/pii_fresh.py) and blind
(bench/pii_blind.py), by a helper session that was asked to write it blind. Its author read
only bench/pii_fresh.py (the generator reused here, whose docstring defines the data format,
the slots, the written forms and the labelling conventions), bench/pii_blind.py and
tests/unit/privacy/test_blind_corpus.py (whose shape this module and its test copy), the
``Sample`` and ``GoldSpan`` definitions of bench/pii_corpus.py and pyproject.toml. It did not
read the detector (appliance/), the data or templates of any other corpus (bench/blind/,
bench/fresh/, bench/unseen/, bench/heldout/, the rest of bench/pii_corpus.py),
bench/pii_quality.py, the docs, the changelog, the README, other tests or the commit history,
and it never ran the detector, the server or any bench other than this module. Every name,
template and word list was written from general knowledge (no Faker, no name generator, no
package's name lists). Nothing in it may be used to build, train or tune a detector: it is
measured for reporting only, and once a result on it has been looked at to change the
detector, it is no longer blind.

Data (bench/blind2/) in exactly the format described in bench/pii_fresh.py's docstring,
built by its generator with the same slots, written forms (all twelve are used) and pattern
values, and labelled by the same conventions:

* ``people.txt``: 1,111 made-up people of 374 cultures in 29 world regions; 946 of them
  (85%) from outside Western, Northern and Southern Europe, North America and Oceania
  (African, Middle Eastern, Caucasian, Central, South and Southeast Asian, Himalayan, East
  Asian, Pacific, Indian Ocean, Caribbean, Latin American, Arctic and Indigenous cultures);
  990 given-name-first, 75 family-name-first and 46 single names; with particles (van der,
  ter, zu, de la, Ó, Nic, ap, bin, binti, anak, ole, Ould, Mint, Ag, al-), hyphens,
  apostrophes, the okina, diacritics, initials, honorific titles per culture, and names that
  are also ordinary words (Hope, Grant, Will, Rose, Bill, Summer, Hunter, Mason, Sunday,
  Precious, Memory, Gift, Patience, Contractor, Engineer, Gentle, Bird, Deer, Sara).
* ``templates.txt``: 283 templates in 25 business styles, 125 of them traps (44%), plus 59
  ``[filler]`` and 28 ``[late]`` sentences. The styles: meeting transcripts with speaker
  names, pipe/CSV table rows, record dumps (JSON, YAML, XML, key=value), CRM and ticket
  exports, e-mail threads with quoted headers, team chat with @mentions and lower case,
  call-centre notes, legal clauses, clinic administration, shipping manifests, university
  administration, banking/KYC, real estate, hotel bookings, insurance claims, incident
  postmortems, procurement, recruitment, press notes, non-native English, code review and
  commit trailers, HR and payroll, field service, event registration, and SMS/voicemail.
  The traps are full of capitalised words that are not people: companies and brands named
  after people, products, eponymous laws, diseases, units and holidays, places and airports
  named after people (LOCATION), field labels ("Parent:", "Ward:", "Branch:", "Page:"),
  job titles, weekdays, months, and ordinary words that are also names (Will, Grant, Hope,
  Bill, Rose, Baker, Mark, Joy, Amber, Jade).
* ``lexicon.txt``: the author's own places, eponymous places and airports (LOCATION),
  companies, products and eponyms (unlabelled), roles, departments and e-mail domains.

Its people are new: no blind2 person's full name (in any of its written arrangements) is a
PERSON string of the fresh, blind, unseen, heldout or own corpora; only a lone given or
family name, with or without a title, may be shared (checked by
tests/unit/privacy/test_blind2_corpus.py; 119 people whose full names the first draft shared
with them were renamed, seeing only the colliding names).

Counts at the default seed (checked by the test): 1,500 texts, 180 of them 100-250-word
paragraphs; all 1,111 people used; 712 trap texts (47%), 233 texts without any PII (16%);
spans PERSON 1,616, LOCATION 653, EMAIL_ADDRESS 261, PHONE_NUMBER 189, IP_ADDRESS 93,
IBAN_CODE 66, CREDIT_CARD 53, US_SSN 32 (``EXPECTED_SPANS``). ``Sample.source`` is
``blind2/<style>``. Build with ``build_blind2_corpus(seed)``; ``python -m bench.pii_blind2``
checks every span and prints counts and a few samples.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.pii_corpus import Sample
from bench.pii_fresh import Stats, _build, check_and_describe

DATA_DIR = Path(__file__).with_name("blind2")
DEFAULT_SEED = 27182
N_TEXTS = 1500
SOURCE = "blind2"
EXPECTED_SPANS = {
    "PERSON": 1616,
    "LOCATION": 653,
    "EMAIL_ADDRESS": 261,
    "PHONE_NUMBER": 189,
    "IP_ADDRESS": 93,
    "IBAN_CODE": 66,
    "CREDIT_CARD": 53,
    "US_SSN": 32,
}


def build_blind2_with_stats(seed: int = DEFAULT_SEED) -> tuple[list[Sample], Stats]:
    """The corpus and the generator's statistics (people used, traps, phone regions...)."""
    return _build(seed, N_TEXTS, DATA_DIR, SOURCE)


def build_blind2_corpus(seed: int = DEFAULT_SEED) -> list[Sample]:
    """The second blind held-out corpus: ``N_TEXTS`` seeded texts with exact gold spans."""
    return build_blind2_with_stats(seed)[0]


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SEED
    check_and_describe(seed, DATA_DIR, SOURCE, EXPECTED_SPANS if seed == DEFAULT_SEED else None)


if __name__ == "__main__":
    main()
