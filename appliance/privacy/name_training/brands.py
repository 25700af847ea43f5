"""Builds the brand list the detector ships (``privacy/name_model/brands.txt.gz``).

Companies, products, law firms and methods are often named after people ("Dyson", "Herman
Miller", "Baker McKenzie", "Gantt") or spelt like names ("Siri", "Grafana"), so the name
model calls them people. The source is ``name_training/brands.txt``, written by hand from
general knowledge.

Each line is ``brand<TAB>kind``, the brand in the matching key of
:func:`appliance.privacy.gazetteers.brand_key` (case-folded, without dots, "&", "+" or a
final "'s"): ``b`` for a brand with no word Faker knows as a given or family name, ``n`` for
one that is also a name; the detector drops the first kind unless the text treats it as a
person, the second only where the text treats it as a brand.

Run with the training extras: ``python -m appliance.privacy.name_training.brands [--out FILE]``.
"""

from __future__ import annotations

import re
from pathlib import Path

from appliance.privacy.gazetteers import BRANDS_FILE, brand_key
from appliance.privacy.name_training.lexicon import faker_names, write_shipped_list

SOURCE = Path(__file__).with_name("brands.txt")
_WORDS = re.compile(r"[\s\-'\u2019]+")


def build() -> list[str]:
    people = faker_names()
    kinds: dict[str, str] = {}
    for line in SOURCE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key = brand_key(line)
        kind = "n" if any(w in people for w in _WORDS.split(key) if w) else "b"
        if kinds.get(key) != "n":
            kinds[key] = kind
    return sorted(f"{key}\t{kind}" for key, kind in kinds.items())


def main() -> None:
    write_shipped_list(BRANDS_FILE, build(), "brands")


if __name__ == "__main__":
    main()
