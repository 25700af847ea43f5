"""Builds the holiday list the detector ships (``privacy/name_model/holidays.txt.gz``).

Holidays are named like people ("Mashujaa Day", "Eid al-Adha", "Martin Luther King Jr.
Day", "Rosh Hashanah") and stand where names stand ("closed on ___"), so the name model
takes some for people. The list holds the public holidays of every country and subdivision
the ``holidays`` package knows, in each of its languages, over a dozen years (lunar and
movable feasts change names: "Eid al-Fitr (estimated)"), with the bracketed notes cut off
and no substituted days off; a one-word name that is also a given or family name Faker knows
("Noel") is left out. Festivals that
no calendar there lists, or names otherwise ("Naadam", "Bihu", "Inti Raymi"), come from the
hand-written ``name_training/festivals.txt``. One case-folded name per line.

Run with the training extras: ``python -m appliance.privacy.name_training.holiday_names [--out FILE]``.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from appliance.privacy.name_training.lexicon import faker_names, write_shipped_list

HOLIDAYS_FILE = "holidays.txt.gz"
FESTIVALS = Path(__file__).with_name("festivals.txt")
YEARS = range(2020, 2032)
_NOTE = re.compile(r"\s*\([^)]*\)\s*$")
_ALLOWED = frozenset(" '.-\u2019&,")


def holiday_names() -> set[str]:
    import holidays

    names: set[str] = set()
    for code, subdivisions in sorted(holidays.list_supported_countries().items()):
        languages: list[str | None] = [*sorted(holidays.country_holidays(code).supported_languages or ())]
        for language in languages or [None]:
            for subdivision in [None, *subdivisions]:
                for name in holidays.country_holidays(
                    code, subdiv=subdivision, years=YEARS, language=language
                ).values():
                    names.update(name.split("; "))
    return names | festival_names()


def festival_names() -> set[str]:
    lines = FESTIVALS.read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _clean(name: str) -> str | None:
    while _NOTE.search(name):
        name = _NOTE.sub("", name)
    name = " ".join(name.split())
    if name.casefold().startswith("the "):
        name = name[4:]
    if len(name) < 3 or not all(c in _ALLOWED or _latin_letter(c) for c in name):
        return None  # other scripts, and "Day off (substituted from 03/08/2025)"
    return name.casefold()


def _latin_letter(c: str) -> bool:
    return c.isalpha() and unicodedata.name(c, "").startswith("LATIN")


def build() -> list[str]:
    """Holiday names, less one-word names that are also given or family names ("Noel")."""
    people = faker_names()
    names = {c for c in map(_clean, holiday_names()) if c is not None}
    return sorted(n for n in names if " " in n or n not in people)


def main() -> None:
    write_shipped_list(HOLIDAYS_FILE, build(), "holiday names")


if __name__ == "__main__":
    main()
