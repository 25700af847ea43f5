"""Towns, holidays, months and brands the name model takes for people: "Customers in Mysuru
were down", "city: Kaohsiung", "we are closed on Mashujaa Day", "registered on 25 April",
"the Dyson fan".

Such names look like personal names and stand where names stand, so the name model often
calls them people. :func:`judge_gazetteers` looks each PERSON guess up, together with the
words around it ("Kota" + "Kinabalu", "Eid" + "al-Adha", "Johnson" + "& Johnson"), in
shipped lists and decides by what the text says.

Places (GeoNames' towns of 15,000 people or more, countries and US states; built by
``name_training/places.py``):

* a place whose words are no personal name ("Mysuru", "Luang Prabang") becomes a LOCATION
  unless the text treats it as a person (a title, a greeting, "with", a sign-off, an
  initial, a speaker's label, a surname beside it);
* a place that is also a name ("Florence", "Jackson", "Ho Chi Minh") becomes a LOCATION only
  where the text treats it as a place: after "in", "from", "to" and the like, after a
  street address ("45 Nkrumah Avenue, Houston"), before "office", "hub" or "City", before a
  country ("Kanazawa, Lebanon"), or as the value of a "city" or "location" field.

When the policy does not detect LOCATION, a place is left in the clear only on such a place
cue, never on the list alone: some people bear a town's name.

Holidays (the public holidays of every country the ``holidays`` package knows, in each of
its languages; built by ``name_training/holiday_names.py``): a guess inside a holiday's
whole name ("Mashujaa Day", "Martin Luther King Jr. Day", "Rosh Hashanah") is no person
unless a title or greeting stands before it.

Months and weekdays: a weekday or a month that is no name ("March") is no person unless the
text treats it as one; "April", "May", "June" and "August" only in a date ("25 April", "since
May", "the May and June payslips").

Brands (companies, products, firms and methods named after people or spelt like names;
hand-written, built by ``name_training/brands.py``): one that holds no personal name
("Grafana") is no person unless the text treats it as one; one that is also a name ("Jenkins",
"Paul Smith") only on a brand cue (an article before it, "&" inside it, a product or service
word after it).

Either way the guess is no longer a PERSON that spreads to the request's other mentions.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable

import regex
from spacy.lang.en.stop_words import STOP_WORDS

from appliance.privacy.name_lexicon import (
    PLACE_WORDS,
    addressed_or_titled,
    is_calendar_word,
    is_ordinary,
    shipped_lines,
)
from appliance.privacy.name_model import NAME_MODEL_DIR
from appliance.privacy.spans import Detection

__all__ = [
    "BRANDS_FILE",
    "HOLIDAYS_FILE",
    "PLACES_FILE",
    "brand_key",
    "brand_kind",
    "is_country",
    "is_holiday",
    "judge_gazetteers",
    "place_kind",
]

PLACES_FILE = "places.txt.gz"
HOLIDAYS_FILE = "holidays.txt.gz"
BRANDS_FILE = "brands.txt.gz"
_BRAND_WINDOW = 5  # "Freshfields Bruckhaus Deringer", "Nagashima Ohno & Tsunematsu"
_PLACE_WINDOW = 4  # "Ho Chi Minh City", "Santa Cruz de Tenerife" are longer, but rare as guesses
_HOLIDAY_WINDOW = 6  # "Martin Luther King Jr. Day", "Day of the Constitution of Ukraine"

_WORD = regex.compile(r"\p{L}[\p{L}\p{M}'\u2019.]*(?:-\p{L}[\p{L}\p{M}'\u2019.]*)*")
_PREPOSITION_BEFORE = regex.compile(
    r"(?<![\p{L}\d])(?i:in|from|to|at|near|via|across|around|outside|inside|into|towards?|visit|visiting|based"
    r"|out[ \t]+of|trip[ \t]+to|flights?[ \t]+to|moved[ \t]+to|relocating[ \t]+to|city[ \t]+of"
    r"|town[ \t]+of|region[ \t]+of|→|->)[ \t]+(?:the[ \t]+)?$"
)
_FIELD_BEFORE = regex.compile(
    r"(?i:city|town|location|region|destination|origin|venue|country|state|province|hub|site|depot|port|ports"
    r"|embark|disembark|place|birthplace|office|campus|datacenter|base|home[ \t]+town)[\"']?[ \t]*[:=][ \t]*[\"']?$"
)
_PLACE_AFTER = frozenset(
    """office offices hub branch campus site plant warehouse depot team airport port harbour harbor city
    province region area metro district county municipality headquarters hq station datacenter datacentre
    launch rollout summit clinic store stores factory facility facilities mission embassy consulate
    community diaspora-""".split()  # noqa: SIM905 - a word list reads best as words
)
_ANY_PLACE_WORD = PLACE_WORDS | _PLACE_AFTER
_SPEAKER_AFTER = regex.compile(r"^[ \t]*(?:\[[^\]\n]{0,12}\])?[ \t]*:")
_NEXT_WORD = regex.compile(r"^[ \t]+(\p{L}[\p{L}\p{M}'\u2019.-]*)")
_PREV_WORD = regex.compile(r"(\p{L}[\p{L}\p{M}'\u2019.-]*)[ \t]+$")
_COMMA_NEXT = regex.compile(
    r"^[ \t]*,[ \t]*(?:the[ \t]+)?(\p{Lu}[\p{L}\p{M}'\u2019.-]*(?:[ \t]+\p{Lu}[\p{L}\p{M}'\u2019.-]*){0,2})"
)
_HOUSE_NUMBER = regex.compile(r"^[ \t]*\d+[\p{L}/-]*[ \t]+\p{L}")
_WITH_OR_SIGN_OFF_BEFORE = regex.compile(
    r"(?<![\p{L}\d])(?i:with|best|regards|kind[ \t]+regards|cheers|thanks|sincerely|warmly|love|yours)[ \t]*[,!]?\s*$"
)
_INITIAL_BEFORE = regex.compile(r"(?<![\p{L}\d])\p{Lu}\.[ \t]*$")
# What makes a brand that is also a name a brand.
_DETERMINER_BEFORE = regex.compile(
    r"(?<![\p{L}\d])(?i:a|an|the|our|your|my|their|its|this|these|those|new|every|each|any)[ \t]+$"
)
_NUMBER_BEFORE = regex.compile(r"\d[ \t]?$")
_AT_OR_OF_BEFORE = regex.compile(r"(?<![\p{L}\d])(?i:at|of)[ \t]+$")
# Words before a name that make it a company: "Employer: Hilton", "offers from Bosch", "counsel
# for Bayer", "merchant Roche". Not "client" or "customer": those are often people.
_COMPANY_BEFORE = regex.compile(
    r"(?<![\p{L}\d])(?i:employer|vendor|vendors|supplier|suppliers|merchant|creditor|debtor|carrier|broker|insurer"
    r"|manufacturer|retailer|distributor|reseller|sponsor|counsel[ \t]+for|offers?[ \t]+from|quotes?[ \t]+from"
    r"|shares[ \t]+(?:of|in)|stake[ \t]+in|acquired[ \t]+by|acquisition[ \t]+of|subsidiary[ \t]+of)[ \t]*:?[ \t]*$"
)
# Another brand joined to this one: "offers from Chanel and Škoda", "Bayer, Roche and Novartis".
_JOINED_AFTER = regex.compile(r"^[ \t]*(?:,|&|\+|/|(?i:and|or|x|vs\.?|versus))[ \t]+(\p{Lu}[\p{L}\p{M}'\u2019.-]*)")
_JOINED_BEFORE = regex.compile(
    r"(\p{Lu}[\p{L}\p{M}'\u2019.-]*)[ \t]*(?:,|&|\+|/|(?<=[ \t])(?i:and|or|x|vs\.?|versus))[ \t]+$"
)
_BRAND_NOUNS = frozenset(
    """app apps account accounts store stores shop shops outlet outlets dealer dealership laptop laptops phone
    phones tablet tablets printer printers fan fans vacuum vacuums hoover chair chairs desk desks boots shoes
    trainers jacket jackets shirt shirts suit suits bag bags handbag watch watches car cars van vans truck
    trucks engine engines card cards shares stock subscription subscriptions server servers pipeline
    pipelines job jobs build builds dashboard dashboards instance instances plugin plugins integration
    workspace workspaces ticket tickets board boards licence license licences licenses contract invoice
    invoices order orders delivery deliveries parcel parcels shipment shipments hotel hotels restaurant
    restaurants burger burgers coffee chocolate chocolates tea beer whisky whiskey vodka gin product products
    device devices software platform cloud api bank loan fund funds brand franchise range model models
    voucher vouchers gift giftcard bar bars sauce cereal warranty charger headphones speaker speakers
    agent assistant reminder reminders alert alerts alarm customer customers care support helpdesk service
    services team sales auto consultancy payroll finance pay money mobile online plus pro premium""".split()  # noqa: SIM905 - a word list reads best as words
)
# What makes a month that is also a name ("April", "May", "June", "August") a month: a day
# or a year beside it ("25 April", "the 4th of May", "June 3rd", "August 2026"), a word of
# time before it ("since May", "end of June"), or another month or weekday joined to it
# ("May and June", "Monday, 4 August", "June-July").
_DAY_BEFORE = regex.compile(r"(?<![\p{L}\d])[0-3]?\d(?:st|nd|rd|th|\.)?(?:[ \t]+of)?[ \t]+(?:the[ \t]+)?$")
_DAY_OR_YEAR_AFTER = regex.compile(r"^\.?,?[ \t]+(?:[0-3]?\d(?:st|nd|rd|th)?|\d{4}|['\u2019]\d\d)(?![\p{L}\d])")
_TIME_BEFORE = regex.compile(
    r"(?<![\p{L}\d])(?i:in|since|until|till|during|throughout|early|mid|late|last|next|this|every|each|coming|past"
    r"|through|by[ \t]+end[ \t]+of|(?:the[ \t]+)?(?:end|start|beginning|middle|rest|whole)[ \t]+of)[ \t]+$|(?i:mid)-$"
)
_JOINER = r"(?:,|/|-|\u2013|\u2014|(?<=[ \t])(?i:and|or|to|through|until|till|&)(?=[ \t]))"
_CALENDAR_JOINED_BEFORE = regex.compile(r"(\p{L}+)\.?[ \t]*" + _JOINER + r"[ \t]*$")
_CALENDAR_JOINED_AFTER = regex.compile(r"^[ \t]*" + _JOINER + r"[ \t]*(\p{L}+)")


@functools.cache
def _gazetteer() -> dict[str, str]:
    with gzip.open(NAME_MODEL_DIR / PLACES_FILE, "rt", encoding="utf-8") as fh:
        return dict(line.rstrip("\n").split("\t") for line in fh if "\t" in line)


def place_kind(value: str) -> str | None:
    """``"p"`` for a place that is no personal name, ``"n"`` for one that is also a name,
    None for no place the gazetteer knows."""
    kind = _raw_kind(value)
    return None if kind is None else kind.lower()


def is_country(value: str) -> bool:
    """A country or a US state ("Lebanon", "Georgia")."""
    kind = _raw_kind(value)
    return kind is not None and kind.isupper()


def _raw_kind(value: str) -> str | None:
    return _gazetteer().get(_key(value))


@functools.cache
def _brands() -> dict[str, str]:
    with gzip.open(NAME_MODEL_DIR / BRANDS_FILE, "rt", encoding="utf-8") as fh:
        return dict(line.rstrip("\n").split("\t") for line in fh if "\t" in line)


_BRAND_JOIN = regex.compile(r"[ \t]*[&+,][ \t]*")
_FINAL_S = regex.compile(r"'s(?!\p{L})")


def brand_key(value: str) -> str:
    """How a brand is looked up: "Ben & Jerry's" and "ben jerry", "Dr. Martens" and "dr
    martens", "Kuehne+Nagel" and "kuehne nagel" are one key."""
    return " ".join(_BRAND_JOIN.sub(" ", _word_key(value)).split())


def brand_kind(value: str) -> str | None:
    """``"b"`` for a brand that is no personal name ("Grafana"), ``"n"`` for one that is
    also a name ("Dyson", "Paul Smith"), None for no brand the list knows."""
    return _brands().get(brand_key(value))


@functools.cache
def _holidays() -> frozenset[str]:
    return shipped_lines(HOLIDAYS_FILE)


def is_holiday(value: str) -> bool:
    """A public holiday's whole name ("Eid al-Adha", "mashujaa day")."""
    return _key(value) in _holidays()


def _key(value: str) -> str:
    return " ".join(value.replace("\u2019", "'").casefold().split())


def judge_gazetteers(text: str, found: list[Detection], *, locations: bool) -> None:
    """Moves PERSON guesses that name a place to LOCATION (or drops them when ``locations``
    is false) and drops those inside a holiday's name, as the module docstring says."""
    kept: list[Detection] = []
    for d in found:
        if d.entity_type != "PERSON":
            kept.append(d)
            continue
        if _holiday_of(text, d) or _calendar_of(text, d) or _brand_of(text, d):
            continue
        place = _street_of(text, d) or _town_after_postcode(text, d) or _place_of(text, d, locations)
        if place is None:
            kept.append(d)
        elif locations:
            kept.append(Detection(place[0], place[1], "LOCATION", d.score, d.recognizer))
    found[:] = kept


def _holiday_of(text: str, d: Detection) -> bool:
    window = _window(text, d, _HOLIDAY_WINDOW, lambda v: "h" if is_holiday(v) else None, _vocabulary(HOLIDAYS_FILE))
    return window is not None and not addressed_or_titled(text, window[0])


def _brand_of(text: str, d: Detection) -> bool:
    """A brand, not a person: one that is no name unless the text treats it as a person, one
    that is also a name only on a brand cue (an article before it, "at" or "of" before a
    brand of several words, "&" or "+" inside it, a product or service word after it: "the
    Dyson fan", "a Jenkins job", "Johnson & Johnson", "Bajaj Customer Care")."""
    window = _window(text, d, _BRAND_WINDOW, brand_kind, _vocabulary(BRANDS_FILE), joins=" \t-&+")
    if window is None:
        return False
    start, end, kind = window
    # "with" or a sign-off before a brand that is no name ("experience with Django") says
    # nothing of a person; a title, a greeting or a speaker's label still does.
    if _treated_as_person(text, start, end, with_or_sign_off=kind != "b"):
        return False
    if kind == "b":
        return True
    head = text[max(0, start - 20) : start]
    if _DETERMINER_BEFORE.search(head) or (" " in text[start:end] and _AT_OR_OF_BEFORE.search(head)):
        return True
    if _COMPANY_BEFORE.search(text[max(0, start - 30) : start]):
        return True
    if _beside_a_brand(text, start, end, lone=" " not in text[start:end].strip()):
        return True
    if "&" in text[start:end] or "+" in text[start:end]:
        return True  # "Johnson & Johnson", "Kuehne+Nagel": a known firm, written as one
    if _NUMBER_BEFORE.search(head):
        return True  # a unit: "300 Kelvin", "5 Newton"
    after = _NEXT_WORD.match(text[end : end + 40])
    return after is not None and after.group(1).casefold().strip(".") in _BRAND_NOUNS


def _beside_a_brand(text: str, start: int, end: int, *, lone: bool) -> bool:
    """Another listed brand joined to this one ("Chanel and Škoda", "Bayer, Roche", "Hilton
    and Grafana"): firms are named beside firms. A full name ("Paul Smith and John Lewis
    approved it") yields only to a neighbour that is no name ("Paul Smith and Grafana"); a
    lone word that is also a name ("Chanel") to any listed neighbour."""
    kinds: set[str] = set()
    after = _JOINED_AFTER.match(text[end : end + 40])
    if after is not None:
        words = _NEIGHBOUR_WORD.findall(text, end + after.start(1), end + after.start(1) + 60)[:_BRAND_WINDOW]
        kinds |= {k for n in range(1, len(words) + 1) if (k := brand_kind(" ".join(words[:n])))}
    before = _JOINED_BEFORE.search(text[max(0, start - 40) : start])
    if before is not None:
        lo = max(0, start - 40) + before.end(1)
        words = _NEIGHBOUR_WORD.findall(text, max(0, lo - 60), lo)[-_BRAND_WINDOW:]
        kinds |= {k for n in range(1, len(words) + 1) if (k := brand_kind(" ".join(words[-n:])))}
    return "b" in kinds or (lone and bool(kinds))


_NEIGHBOUR_WORD = regex.compile(r"[^\s,;:()]+")


def _calendar_of(text: str, d: Detection) -> bool:
    """A month or a weekday, not a person: a weekday or a month that is no name ("March")
    unless the text treats it as a person; a month that is also a name only on a date cue."""
    words = list(_WORD.finditer(text, d.start, d.end))
    if not words or not all(is_calendar_word(w.group()) for w in words):
        return False
    start, end = words[0].start(), words[-1].end()
    if _treated_as_person(text, start, end):
        return False
    if all(is_ordinary(w.group()) for w in words):
        return True
    head, tail = text[max(0, start - 30) : start], text[end : end + 30]
    if _DAY_BEFORE.search(head) or _DAY_OR_YEAR_AFTER.match(tail) or _TIME_BEFORE.search(head):
        return True
    joined = (_CALENDAR_JOINED_BEFORE.search(head), _CALENDAR_JOINED_AFTER.match(tail))
    return any(m is not None and is_calendar_word(m.group(1)) for m in joined)


def _place_of(text: str, d: Detection, locations: bool) -> tuple[int, int] | None:
    """The place's span, or None for a person. Without a place cue, a place that is no
    known name still becomes a LOCATION, which hides it all the same; but it is dropped
    (left in the clear) only on a cue, since some people bear a town's name ("Bahar")."""
    window = _window(text, d, _PLACE_WINDOW, place_kind, _vocabulary(PLACES_FILE))
    if window is None:
        return None
    start, end, kind = window
    if _treated_as_person(text, start, end):
        return None
    if (kind == "p" and locations) or _treated_as_place(text, start, end):
        return start, end
    return None


@functools.cache
def _vocabulary(list_file: str) -> frozenset[str]:
    """Every word of a shipped list's entries, as :func:`_word_key` writes it."""
    keys = {PLACES_FILE: _gazetteer, BRANDS_FILE: _brands, HOLIDAYS_FILE: _holidays}[list_file]()
    return frozenset(_word_key(w) for key in keys for w in key.split())


def _word_key(word: str) -> str:
    """Case-folded, without dots or a final "'s": how brands and list words are compared."""
    return str(_FINAL_S.sub("", word.replace("\u2019", "'").casefold())).replace(".", "")


def _window(
    text: str,
    d: Detection,
    size: int,
    lookup: Callable[[str], str | None],
    vocabulary: frozenset[str],
    joins: str = " \t-",
) -> tuple[int, int, str] | None:
    """The longest run of at most ``size`` words around the guess (the guess itself
    included, whole), on the guess's line, joined only by ``joins``, that ``lookup`` knows,
    with what it said. ``vocabulary`` (every word of the list) rules out at once a guess
    with a word no entry holds, which is most of them."""
    line_start = text.rfind("\n", 0, d.start) + 1
    line_end = text.find("\n", d.end)
    line_end = len(text) if line_end < 0 else line_end
    words = [(m.start(), m.end()) for m in _WORD.finditer(text, line_start, line_end)]
    inside = [i for i, (s, e) in enumerate(words) if s < d.end and d.start < e]
    if not inside or len(inside) > size:
        return None
    if any(_word_key(text[s:e]) not in vocabulary for s, e in (words[i] for i in inside)):
        return None
    first, last = inside[0], inside[-1]
    best: tuple[int, int, str] | None = None
    for lo in range(max(0, last - size + 1), first + 1):
        for hi in range(last, min(len(words), lo + size)):
            start, end = words[lo][0], words[hi][1]
            gaps = [text[words[i][1] : words[i + 1][0]] for i in range(lo, hi)]
            if any(g.strip(joins) for g in gaps):  # words of one name, not across punctuation
                continue
            kind = lookup(text[start:end].rstrip("."))
            if kind is not None and (best is None or end - start > best[1] - best[0]):
                best = (start, end, kind)
    return best


def _treated_as_person(text: str, start: int, end: int, *, with_or_sign_off: bool = True) -> bool:
    """A title or greeting before it, a speaker's label after it, or a name-like capitalized
    word beside it that is no place word ("Florence Nightingale")."""
    if addressed_or_titled(text, start) or _SPEAKER_AFTER.match(text[end : end + 20]):
        return True
    if _INITIAL_BEFORE.search(text[max(0, start - 4) : start]):
        return True  # "K. Toyooka"
    if with_or_sign_off and _WITH_OR_SIGN_OFF_BEFORE.search(text[max(0, start - 30) : start]):
        return True  # "a call with Bahar", "Best, Raka"
    after = _NEXT_WORD.match(text[end : end + 40])
    before = _PREV_WORD.search(text[max(0, start - 40) : start])
    for m in (before, after):
        if m is None:
            continue
        word = m.group(1).strip(".")
        if (
            len(word) > 2
            and not (word.isupper() or word.casefold() in STOP_WORDS)
            and (word[0].isupper() or text[start].islower())  # all lower case: chat ("cuauhtémoc ramírez")
            and word.casefold() not in _ANY_PLACE_WORD
            and place_kind(word) is None
            and not is_ordinary(word)
            and not is_calendar_word(word)
        ):
            return True
    return False


def _treated_as_place(text: str, start: int, end: int) -> bool:
    head = text[max(0, start - 40) : start]
    if _PREPOSITION_BEFORE.search(head) or _FIELD_BEFORE.search(head):
        return True
    after = _NEXT_WORD.match(text[end : end + 40])
    if after is not None and after.group(1).casefold().strip(".") in _PLACE_AFTER:
        return True
    country = _COMMA_NEXT.match(text[end : end + 60])
    if country is not None and is_country(country.group(1)):
        return True
    return _after_an_address(text, start)


# A street in an address line: a house number before it ("124 Anna Salai, Chennai") or
# after it ("Jungfernstieg 49, 20354 Hamburg"), then a comma and a postcode or a known town.
_NUMBER_FIRST = regex.compile(r"(?:^|[\n,:;(]|(?<![\p{L}\d])(?i:at|to|for|in|from|on|c/o))[ \t]*\d{1,5}\p{L}?[ \t]+$")
_NUMBER_AFTER = regex.compile(r"^[ \t]+\d{1,5}\p{L}?(?=[ \t]*,)")
_LINE_START_BEFORE = regex.compile(r"(?:^|[\n,:;(])[ \t]*$")
_POSTCODE_AFTER = regex.compile(r"^[ \t]*,[ \t]*\d{4,6}(?!\d)")
_TOWN_AFTER = regex.compile(r"^[ \t]*,[ \t]*(\p{Lu}[\p{L}\p{M}'\u2019.-]*(?:[ \t]+\p{L}[\p{L}\p{M}'\u2019.-]*){0,3})")


def _street_of(text: str, d: Detection) -> tuple[int, int] | None:
    """The guess's span when it names the street of an address line, else None. The postcode
    or known town after the comma is what makes it an address: "Anna Berg 3, Ben Okoro 2" is
    a list."""
    if _NUMBER_FIRST.search(text[max(0, d.start - 40) : d.start]):
        end = d.end
    else:
        number = _NUMBER_AFTER.match(text[d.end : d.end + 12])
        if number is None or not _LINE_START_BEFORE.search(text[max(0, d.start - 20) : d.start]):
            return None
        if _treated_as_person(text, d.start, d.end):
            return None
        end = d.end + number.end()
    if _POSTCODE_AFTER.match(text[end : end + 12]):
        return d.start, d.end
    town = _TOWN_AFTER.match(text[end : end + 60])
    if town is None:
        return None
    words = town.group(1).split()
    # A town that is no name ("Chennai", not "Florence"), or a country.
    candidates = [" ".join(words[:n]).rstrip(".") for n in range(len(words), 0, -1)]
    known = any(place_kind(c) == "p" or is_country(c) for c in candidates)
    return (d.start, d.end) if known else None


# "Queen Street 113, 39097 Girona", "…\n75011 Paris": the town after a postcode that opens
# an address line's part. Only a town of up to three words, closing the part.
_POSTCODE_BEFORE = regex.compile(r"(?:^|[\n,;])[ \t]*(?:\p{Lu}{1,2}-)?\d{4,6}[ \t]+$")
_PART_END = regex.compile(r"[ \t]*(?:$|[\n,;.)])")


def _town_after_postcode(text: str, d: Detection) -> tuple[int, int] | None:
    if len(text[d.start : d.end].split()) > 3 or not _POSTCODE_BEFORE.search(text[max(0, d.start - 16) : d.start]):
        return None
    return (d.start, d.end) if _PART_END.match(text, d.end) else None


def _after_an_address(text: str, start: int) -> bool:
    """Right after a street address and a comma: "45 Nkrumah Avenue, Houston", "Jalan Tun
    Razak, Stanley" (a house number first, or a street word first or last)."""
    head = text[text.rfind("\n", 0, start) + 1 : start].rstrip(" \t")
    if not head.endswith(","):
        return False
    part = regex.split(r"[,;:|(]", head[:-1])[-1]
    words = [w.casefold().strip(".") for w in part.split()]
    return bool(words) and (bool(_HOUSE_NUMBER.match(part)) or words[0] in PLACE_WORDS or words[-1] in PLACE_WORDS)
