"""Builds the common-word lexicon the detector ships (``privacy/name_model/common_words.txt.gz``).

The name model reads casing and context, not a dictionary, so it sometimes takes a lone
English word for a name: a heading ("Housekeeping"), a form label ("Payslip"), a term
("thyroiditis"), a chat word ("rota"). The lexicon lists English words that are not also
given or family names: every lemma of the packaged spaCy model's English word index (nouns,
verbs, adjectives, adverbs; WordNet's), the nouns' plurals and the verbs' regular forms
("seconded", "approving"), minus every name Faker knows
in any of its locales (transliterated and ASCII-folded too). A word that is both ("Hope",
"Mark", "Rose", "Lee", "James") is not listed: context must decide for those.

A second list (``name_words.txt.gz``) holds those that are both and are English as a verb,
adjective or adverb ("frank", "grace", "bill", "hope"): a capital that only opens a sentence
makes them no more a name than "Housekeeping" ("Frank feedback from users").

Run with the training extras: ``python -m appliance.privacy.name_training.lexicon [--name-words]
[--out FILE]`` (``--name-words`` builds the second list).
"""

from __future__ import annotations

import gzip
import importlib
import pkgutil
import re
import sys
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from appliance.privacy.name_model import NAME_MODEL_DIR
from appliance.privacy.name_training.people import HELD_OUT_LOCALES

LEXICON_FILE = "common_words.txt.gz"
NAME_WORDS_FILE = "name_words.txt.gz"
_WORD = re.compile(r"[a-z]{3,}")
_NAME_LISTS = re.compile(r"(first|last)_(names?|romanized_names)(_(male|female|nonbinary))?$|^(prefixes|suffixes)$")


def _fold(value: str) -> str:
    from anyascii import anyascii

    plain = "".join(c for c in unicodedata.normalize("NFKD", value) if not unicodedata.combining(c))
    return anyascii(plain).casefold()


def _name_words(values: Iterable[object]) -> set[str]:
    words: set[str] = set()
    for value in values:
        for part in re.split(r"[\s\-'\u2019.]+", str(value)):
            if part:
                words.add(part.casefold())
                words.add(_fold(part))
    return words


def faker_names() -> set[str]:
    """Every given and family name word of every Faker person provider (the bench's held-out
    locales aside, as for training)."""
    from faker.providers import person

    names: set[str] = set()
    for module in pkgutil.iter_modules(person.__path__):
        if module.name in HELD_OUT_LOCALES:
            continue
        provider = importlib.import_module(f"faker.providers.person.{module.name}").Provider
        for attr in dir(provider):
            if not _NAME_LISTS.search(attr) or attr.startswith(("prefixes", "suffixes")):
                continue
            value = getattr(provider, attr, None)
            if isinstance(value, dict | list | tuple):
                names |= _name_words(value)
    return names


def english_words(parts: tuple[str, ...] = ("noun", "verb", "adj", "adv"), *, forms: bool = True) -> set[str]:
    """The lemmas of the packaged spaCy model's English word index (WordNet's) for these
    parts of speech; with ``forms``, the nouns' plurals and the verbs' regular forms too."""
    import spacy

    from appliance.config import PrivacySettings

    nlp = spacy.load(PrivacySettings().nlp_model, exclude=["ner", "parser", "tagger"])
    index = nlp.get_pipe("lemmatizer").lookups.get_table("lemma_index")  # type: ignore[attr-defined]
    words: set[str] = set()
    for pos in parts:
        lemmas = [w for w in index.get(pos, []) if _WORD.fullmatch(w)]
        words.update(lemmas)
        if not forms:
            continue
        if pos == "noun":
            words.update(_plural(w) for w in lemmas)
        elif pos == "verb":
            words.update(form for w in lemmas for form in _verb_forms(w))
    return words


def _verb_forms(verb: str) -> set[str]:
    """The regular inflections of a verb ("seconded", "approving", "approves"); a doubled
    last consonant is added as a second spelling ("stopped"): a form no one writes is never
    met, so spelling too many costs nothing."""
    third = _plural(verb)
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")):
        past, ing = {verb + "d"}, {verb[:-1] + "ing"}
    elif verb.endswith("y") and verb[-2:-1] not in "aeiou":
        past, ing = {verb[:-1] + "ied"}, {verb + "ing"}
    else:
        past, ing = {verb + "ed"}, {verb + "ing"}
        if len(verb) >= 3 and verb[-1] not in "aeiouwxy" and verb[-2] in "aeiou" and verb[-3] not in "aeiou":
            past.add(verb + verb[-1] + "ed")
            ing.add(verb + verb[-1] + "ing")
    return {third, *past, *ing}


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def build() -> list[str]:
    return sorted(english_words() - faker_names())


def build_name_words() -> list[str]:
    """Names that are also English verbs, adjectives or adverbs (WordNet's nouns hold
    famous people's names, "rupert", "adam": those are left out)."""
    return sorted(english_words(("verb", "adj", "adv"), forms=False) & faker_names())


def write_shipped_list(default_name: str, lines: list[str], what: str) -> None:
    """Writes ``lines`` gzipped to ``--out FILE`` or the shipped file ``default_name``."""
    out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else NAME_MODEL_DIR / default_name
    # mtime=0: the same lines give the same bytes (the bundle's manifest stays reproducible).
    with out.open("wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as fh:
        fh.write("\n".join(lines).encode() + b"\n")
    print(f"{len(lines)} {what} -> {out}")


def main() -> None:
    if "--name-words" in sys.argv:
        write_shipped_list(NAME_WORDS_FILE, build_name_words(), "names that are also English words")
    else:
        write_shipped_list(LEXICON_FILE, build(), "common English words that are not names")


if __name__ == "__main__":
    main()
