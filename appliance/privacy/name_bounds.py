"""Whole names: a PERSON detection grows over the words that belong to the name.

A replacement must never leave part of a person behind. Detectors often find the core of
a name and stop short of what surrounds it: a title ("Dr.", "Sheikh", "Pak"), a
post-nominal ("PhD", "Jr.", "B.Eng."), an honorific suffix ("Tanaka-san", "Mehmet Bey"),
or the particles inside a surname ("Ludwig van Beethoven", "de la Cruz"). This module
widens PERSON spans over exactly those words, and joins two parts of one name that the
detector found separately. It never widens over a word another detection claimed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import regex
from spacy.lang.en.stop_words import STOP_WORDS

from appliance.privacy.gazetteers import brand_kind, place_kind
from appliance.privacy.name_lexicon import PLACE_WORDS, is_calendar_word, is_name_word, is_ordinary
from appliance.privacy.name_model import sentence_start
from appliance.privacy.names import plausible_name
from appliance.privacy.spans import Detection

__all__ = ["bare_name", "widen_names"]

# Titles written before a name. Capitalized as listed; the common English ones also in
# lower case ("dr. okafor" in a chat). A trailing dot is optional.
_TITLES = (
    "Mr|Mrs|Ms|Mx|Miss|Mister|Dr|Doctor|Prof|Professor|Sir|Dame|Lady|Lord|Rev|Reverend|Fr|Father|Herr|Frau|Mme"
    "|Madame|Mlle|Mademoiselle|Monsieur|Señor|Senor|Señora|Senora|Señorita|Sra|Srta|Sr|Dña|Doña|Don|Dom|Sig|Signor"
    "|Signora|Dott|Dhr|Mevr|Mevrouw|Meneer|Sheikh|Shaikh|Sheikha|Chief|Alhaji|Alhaja|Hajia|Haji|Hajjah|Pastor|Imam"
    "|Rabbi|Judge|Justice|Capt|Captain|Col|Colonel|Sgt|Sergeant|Lt|Lieutenant|Gen|General|Maj|Major|Cmdr|Adm|Hon"
    "|Eng|Engr|Ing|Dipl\\.-Ing|Mag|Pani|Pan|Sayın|Sayin|Bapak|Pak|Ibu|Bu|Khun|Mwalimu|Shri|Shrimati|Smt|Sri|Kumari"  # noqa: RUF001  Turkish dotless i
    "|Dato'|Datuk|Datin|Tan Sri|Puan|Encik|Cik|Ustaz|Ustazah|Mallam|Malam|Madam|Bwana|Mama|Baba|Nana|Oga|Daw|U"
    "|Ato|Woizero|Weyzero|Kyrios|Kyria|Gospodin|Gospozha|Hr|Fru|Fröken|Mgr|Ir|Drs|Dra|Lic|Licda|Arq|Abg|Abogado"
)
_LOWER_TITLES = "mr|mrs|ms|mx|miss|dr|prof|sir|herr|frau|mme|sr|sra|dhr|mevr"
_TITLE_BEFORE = regex.compile(rf"(?:(?<![\p{{L}}\d])(?:{_TITLES}|{_LOWER_TITLES})\.?)[ \t]+$")

# Post-nominals after a name, with or without a comma.
_POST = (
    "Jr|Sr|Snr|Jnr|II|III|IV|V|PhD|Ph\\.D|DPhil|MD|M\\.D|DO|DDS|DMD|DVM|PharmD|EdD|JD|LLB|LL\\.B|LLM|LL\\.M|MBA|MPA"
    "|MPH|MPhil|MSc|M\\.Sc|MS|MA|M\\.A|MEng|M\\.Eng|BSc|B\\.Sc|BA|B\\.A|BEng|B\\.Eng|BCom|B\\.Com|BBA|Esq|CPA|CFA|FCA"
    "|ACA|ACCA|CIMA|RN|NP|PA-C|PE|P\\.E|PMP|FRCS|FRCP|MRCP|FRS|OBE|MBE|CBE|KBE|DBE|QC|KC|SC|CEng|RIBA|FAIA|AIA"
    "|S\\.H|S\\.Kom|S\\.E|S\\.T|S\\.Ked|S\\.Sos|S\\.Pd|S\\.Psi|S\\.Si|M\\.Kom|M\\.M|Dipl\\.-Kfm|Dipl\\.-Ing|Mag"
)
_POST_AFTER = regex.compile(rf"^(?:,?[ \t]+(?:{_POST})\.?)(?![\p{{L}}\d])")
# Honorifics joined to a name ("Tanaka-san") or after it ("Mehmet Bey", "Gupta ji").
_HONORIFIC_AFTER = regex.compile(
    r"^(?:-(?:san|sama|kun|chan|sensei|senpai|shi|ssi|nim|ji|jee|sahib|saheb|garu|ge|jie)"
    r"|[ \t]+(?:Bey|Hanım|Hanim|Efendi|Pasha|Paşa|Sahib|Saheb|Sahab|Ji|ji|Garu|garu|Gaaru|Sensei|Sama|Ssi))"  # noqa: RUF001
    r"(?![\p{L}\d])"
)
_PARTICLES = (
    "van|van der|van den|van de|van 't|ver|von|von der|von und zu|zu|vom|de|de la|de las|de los|del|della|delle|dei"
    "|degli|di|da|das|do|dos|du|des|le|la|lo|bin|binti|binte|bint|ibn|ben|bat|al|el|ul|ter|ten|y|e|af|av|mac|nic|ní|ó"
    "|ua|ap|ab|abu|abd|abdel|abdul"
)
_PARTICLES_BEFORE = regex.compile(rf"(?<![\p{{L}}\d])(?:(?i:{_PARTICLES})[ \t]+)+$")
_PARTICLE_GAP = regex.compile(rf"^[ \t]+(?:(?i:{_PARTICLES})[ \t]+)+$")
_PARTICLE_FIRST = regex.compile(rf"(?:{_PARTICLES})[ \t]+")
_LOOK = 40  # characters looked at on each side
# Initials before a name ("K. Dimitrov", "J. R. Okafor"); only with their dots: a lone
# capital before a name is as often a list's letter or the pronoun "I".
_INITIALS_BEFORE = regex.compile(r"(?<![\p{L}\d.])(?:\p{Lu}\.[ \t]?){1,3}[ \t]*$")
# The rest of a hyphenated word the span stops inside ("PARK CHAE" + "-WON").
_HYPHEN_TAIL = regex.compile(r"^(?:-\p{L}[\p{L}\p{M}'\u2019]*)+")
_HYPHEN_HEAD = regex.compile(r"(?<![\p{L}\p{M}\d'\u2019-])(?:\p{L}[\p{L}\p{M}'\u2019]*-)+$")
# One word beside the span, one space away on the same line: the rest of the name the
# detector did not mark ("Siyabonga" + "Qwabe", "Daulet" + "Bekmukhambetov").
_WORD_AFTER = regex.compile(r"^ (\p{L}[\p{L}\p{M}'\u2019]*(?:-\p{L}[\p{L}\p{M}'\u2019]*)*)(?![\p{L}\p{M}\d])")
_WORD_BEFORE = regex.compile(
    r"(?<![\p{L}\p{M}\d'\u2019.-])(\p{L}[\p{L}\p{M}'\u2019]*(?:-\p{L}[\p{L}\p{M}'\u2019]*)*) $"
)
# A given name's initial after it, closing the name ("Deepak A." signing a review).
_INITIAL_AFTER = regex.compile(r"^ \p{Lu}\.(?=[ \t]*$|[ \t]*[\n,;:)\]\"\u201d])")
# "Traveller: Gumbo, Tinashe", "2  CHACKO, Reshma": a family name, a comma, then the given
# name the span holds, at a line's or a label's start.
_FAMILY_BEFORE = regex.compile(
    r"(?:^|[\n:]|\d[.)]?)[ \t]*(\p{Lu}[\p{L}\p{M}'\u2019]*(?:[ -]\p{Lu}[\p{L}\p{M}'\u2019]*)?), $"
)
# "CABAHUG, Rommel": a family name in capitals, a comma, then the given name.
_GIVEN_AFTER_CAPS = regex.compile(r"^, (\p{Lu}[\p{Ll}\p{M}'\u2019]+(?:-\p{L}[\p{L}\p{M}'\u2019]*)*)(?![\p{L}\p{M}\d])")
_GUESSED_TYPES = frozenset({"LOCATION", "ORGANIZATION", "NRP"})


# What the name model thinks of the characters [start, end): the highest name probability
# of a token there (0 when no model reads the text).
Probability = Callable[[int, int], float]
# A neighbour word the model gives at least this is taken into the name even when it is a
# place's or a brand's name too ("Luz", "Carballo"); the span itself needs 0.8. Two bars,
# as in hysteresis thresholding: a name is found on strong evidence and then followed
# over its weaker neighbours.
_NEIGHBOUR_PROBABILITY = 0.3
_SURE = 0.9  # a function word ("Will", "Case") beside a name joins it only on this
_NEIGHBOURS = 3  # words taken on each side: "Íñigo" + "Sáenz" + "de Heredia"


def _no_model(start: int, end: int) -> float:
    return 0.0


def widen_names(text: str, detections: Sequence[Detection], probability: Probability = _no_model) -> list[Detection]:
    """``detections`` with each PERSON span grown over its title, post-nominal, honorific
    and particles, and PERSON spans that are parts of one name joined. ``probability``
    is the name model's reading of the text, for the unmarked words beside a name."""
    others = [d for d in detections if d.entity_type != "PERSON"]
    people = sorted(d for d in detections if d.entity_type == "PERSON")
    if not people:
        return list(detections)
    # A place or group guess right after a name and a particle is the name's last part
    # ("Juan Carlos de la Fuente y Olmedo": the small NER model calls Olmedo a town).
    for d in list(people):
        for o in others:
            if o.entity_type in _GUESSED_TYPES and o.start > d.end and _PARTICLE_GAP.match(text[d.end : o.start]):
                others.remove(o)
                people.append(Detection(o.start, o.end, "PERSON", d.score, d.recognizer))
                break
    people.sort()

    def free(start: int, end: int) -> bool:
        return not any(o.start < end and start < o.end for o in others)

    grown: list[Detection] = []
    for d in people:
        start, end = d.start, d.end
        for _ in range(3):  # "Prof. Dr. Amara Okafor"
            m = _TITLE_BEFORE.search(text, max(0, start - _LOOK), start)
            if m is None or not free(m.start(), start):
                break
            start = m.start()
        m = _PARTICLES_BEFORE.search(text, max(0, start - _LOOK), start)
        if m is not None and free(m.start(), start) and _name_like(text, start):
            start = m.start()
        for pattern in (_HONORIFIC_AFTER, _POST_AFTER, _POST_AFTER):
            m = pattern.match(text[end : end + _LOOK])
            if m is not None and free(end, end + m.end()):
                end += m.end()
        start, end = _whole_words(text, start, end, free, probability)
        m = _INITIALS_BEFORE.search(text, max(0, start - 12), start)
        if m is not None and free(m.start(), start):
            start = m.start()
        grown.append(Detection(start, end, "PERSON", d.score, d.recognizer))
    joined: list[Detection] = []
    for d in grown:
        if joined:
            last = joined[-1]
            gap = text[last.end : d.start]
            particle_led = gap.strip(" \t") == "" and _PARTICLE_FIRST.match(text, d.start) is not None
            if d.start <= last.end or ((_PARTICLE_GAP.match(gap) or particle_led) and free(last.end, d.start)):
                best = last if last.score >= d.score else d
                joined[-1] = Detection(last.start, max(last.end, d.end), "PERSON", best.score, best.recognizer)
                continue
        joined.append(d)
    return sorted(others + joined)


def _whole_words(
    text: str, start: int, end: int, free: Callable[[int, int], bool], probability: Probability
) -> tuple[int, int]:
    """The span over the rest of a hyphenated word it stops inside, over an unmarked name
    word beside it written in the same case, over the given name after a family name in
    capitals ("CABAHUG, Rommel"), over an initial closing it ("Deepak A.") and over the family
    name before a comma at a line's or a label's start ("Gumbo, Tinashe")."""
    m = _HYPHEN_TAIL.match(text[end : end + _LOOK])
    if m is not None and free(end, end + m.end()):
        end += m.end()
    m = _HYPHEN_HEAD.search(text, max(0, start - _LOOK), start)
    if m is not None and free(m.start(), start):
        start = m.start()
    span = text[start:end]
    caps = span.isupper()
    for _ in range(_NEIGHBOURS):
        after = _WORD_AFTER.match(text[end : end + _LOOK])
        if after is None or not free(end, end + after.end()):
            break
        word = (end + after.start(1), end + after.end(1))
        if not (_rest_of_name(after.group(1), caps) or _read_as_name(text, word, caps, probability)):
            break
        end += after.end()
    for _ in range(_NEIGHBOURS):
        before = _WORD_BEFORE.search(text, max(0, start - _LOOK), start)
        if before is None or not free(before.start(), start):
            break
        word = (before.start(1), before.end(1))
        if not (_rest_of_name(before.group(1), caps) or _read_as_name(text, word, caps, probability)):
            break
        start = before.start()
    given = _GIVEN_AFTER_CAPS.match(text[end : end + _LOOK]) if caps and len(span) > 2 else None
    if given is not None and _rest_of_name(given.group(1), caps=False) and free(end, end + given.end()):
        end += given.end()
    initial = _INITIAL_AFTER.match(text[end : end + _LOOK])
    if initial is not None and not caps and free(end, end + initial.end()):
        end += initial.end()
    family = _FAMILY_BEFORE.search(text, max(0, start - _LOOK), start)
    if family is not None and free(family.start(1), start):
        words = family.group(1).replace("-", " ").split()
        if all(_rest_of_name(w, w.isupper()) for w in words):
            start = family.start(1)
    return start, end


_INNER_CAPITAL = regex.compile(r"(?<!^Ma?c|['\u2019-])(?<=\p{L})\p{Lu}")


def _rest_of_name(word: str, caps: bool) -> bool:
    """A word that can only be more of the name: written like the name (capitalized, or in
    capitals beside capitals), and no English, calendar, place, brand or function word."""
    if len(word) < 2 or (word.isupper() != caps) or not word[0].isupper():
        return False
    if not caps and _INNER_CAPITAL.search(word):
        return False  # "GmbH", "PayPal": a brand's casing ("McKenzie", "O'Neil", "Bekele-Wolde" pass)
    w = word.casefold()
    return (
        plausible_name(word)
        and not is_ordinary(word)
        and not is_name_word(word)
        and not is_calendar_word(word)
        and w not in PLACE_WORDS
        and place_kind(word) is None
        and brand_kind(word) is None
    )


def _read_as_name(text: str, word: tuple[int, int], caps: bool, probability: Probability) -> bool:
    """A word beside a name that the model reads as part of one, written like the name and
    no function, calendar or place word ("Luz" before "Dary Quintero": also a town's name)."""
    value = text[word[0] : word[1]]
    if len(value) < 2 or value.isupper() != caps or not value[0].isupper():
        return False
    w = value.casefold()
    if is_calendar_word(value) or w in PLACE_WORDS or brand_kind(value) == "b":
        return False
    p = probability(*word)
    if w in STOP_WORDS or is_ordinary(value):
        # "Will Cartwright", not "Bluewattle Health": an English word only on the model's
        # word, and not opening a sentence
        return p >= _SURE and not sentence_start(text, word[0]) and (w in STOP_WORDS or plausible_name(value))
    return plausible_name(value) and p >= _NEIGHBOUR_PROBABILITY


_TITLES_FIRST = regex.compile(rf"^(?:(?:{_TITLES}|{_LOWER_TITLES})\.?[ \t]+)+")


def bare_name(span: str) -> str:
    """``span`` without the titles in front ("ms. Pomeroy" -> "Pomeroy"), so an allow-list
    entry matches a name however it was addressed."""
    return str(_TITLES_FIRST.sub("", span.strip()))


def _name_like(text: str, start: int) -> bool:
    """Particles are taken only before a capitalized word ("de Souza", not "de facto")."""
    return start < len(text) and text[start].isupper()
