"""A third, independent held-out PII corpus ("fresh"), for the final honest measurement.

Written from scratch after the other two held-out corpora (bench/pii_heldout.py,
bench/pii_unseen.py) had been used to tune the detector. Its author read neither their
data nor bench/pii_corpus.py's templates nor anything under appliance/privacy/; only
``Sample`` and ``GoldSpan`` are shared, and the labelling conventions are those stated in
bench/pii_unseen.py's docstring, so that scores stay comparable. Nothing in it may be used
to build, train or tune a detector: once a result on it has been looked at to change the
detector, it is no longer fresh. Its people are new: no fresh person's name (in any of its
written arrangements) is a PERSON string of the other two corpora, and the only PERSON
strings they share are a lone given or family name, with or without a title ("Nadia",
"Ms Diallo"), which many people bear (checked by tests/unit/privacy/test_fresh_corpus.py;
74 people whose full names the first draft shared with them were renamed).

Data (bench/fresh/), all hand-written (no Faker, no name generator, no package's lists):

* ``people.txt``: 1,050 people of 207 cultures in 21 world regions. A header line
  ``== culture | group | order [| m:T1,T2 f:T3 x:T4]`` opens a culture: ``order`` is ``gf``
  (given name first), ``fg`` (family name first: Chinese, Japanese, Korean, Hungarian,
  Vietnamese...) or ``mono`` (a single name: Indonesian, Burmese...); optional titles per
  gender replace the default English ones. Each person is ``g first / second`` in written
  order (``g`` is m, f or x), or ``g name`` for a single name.
* ``templates.txt``: 240 templates in 16 business styles under ``[style]`` headers, plus
  the 60 ``[filler]`` and 30 ``[late]`` sentences from which 100-250-word paragraphs are put
  together (the name comes late, in a ``[late]`` sentence, without a title). A template
  starting with ``! `` holds a precision trap (a company, product, law, disease, unit,
  weekday or month, or an ordinary word that is also a name) and is counted as a trap text.
* ``lexicon.txt``: cities, countries, streets, airports and places named after people
  (LOCATION), eponymous companies and products, eponymous laws/diseases/units/holidays,
  roles, departments and e-mail domains.

Slots in templates: ``{P1}``..``{P4}`` (one person each per text; ``{P1:form}`` picks a
written form: full, given, family, title, tfull, sg, init, caps, lower, lgiven, poss,
formal; without a form one is drawn to suit the style), ``{SHE1}``, ``{HER1}``, ``{HIM1}``
(pronouns by that person's gender; ``:cap`` capitalises), ``{EMAIL}`` / ``{EMAIL:p1}``,
``{PHONE}``, ``{CARD}``, ``{IBAN}``, ``{SSN}``, ``{IP}``, ``{IP4}``, ``{IP6}``, ``{CITY}``,
``{COUNTRY}``, ``{STREET}``, ``{ADDR}``, ``{ELOC}``, ``{AIRPORT}`` (labelled; the last two
are named after people and count as traps); ``{BRAND}``, ``{PRODUCT}``, ``{EPONYM}`` (traps,
unlabelled) and ``{ROLE}``, ``{DEPT}``, ``{DAY}``, ``{MONTH}``, ``{DATE}``, ``{TIME}``,
``{N}``, ``{REF}``, ``{AMOUNT}`` (unlabelled fillers).

Pattern values are made here: phone numbers vary the ``phonenumbers`` package's example
numbers (kept valid) for 65 regions in national, international and E.164 form, some with
an extension; cards pass Luhn; IBANs of 16 countries carry valid mod-97 check digits
(national check digits inside the BBAN are not computed); SSNs use valid area/group/serial
ranges; IPs are v4 and v6.

Labelling conventions (as bench/pii_unseen.py's):

* PERSON covers the whole written name, titles before it ("Dr.", "Mrs", "Daw", "Pak") and
  honorifics written onto it ("Sato-san") included; particles ("van der", "bin", "Ó",
  "al-") are inside. A possessive "'s" is outside. "SURNAME, Given" and "SURNAME Given"
  are one span. The "@" of a chat mention is outside; names inside e-mail addresses are
  only part of the EMAIL_ADDRESS span.
* LOCATION: cities, countries, streets, airports, buildings and parks, also those named
  after people; house numbers and postcodes are outside.
* Unlabelled on purpose (must not be PERSON): companies and brands (also those named after
  people), products, laws, diseases, units, weekdays, months, job titles, departments and
  ordinary words that are also names.
* EMAIL_ADDRESS, PHONE_NUMBER (as written, with its parentheses, "+" and an extension
  written after it: "ext. 214", "x31"), CREDIT_CARD, IBAN_CODE, US_SSN, IP_ADDRESS: the
  value as written, with its spaces or dashes.

Counts at the default seed (checked by the test): 1,500 texts, 180 of them 100-250-word
paragraphs; all 1,050 people used; 654 trap texts (44%), 252 texts without any PII; spans
PERSON 1,565, LOCATION 1,064, PHONE_NUMBER 249, EMAIL_ADDRESS 160, IP_ADDRESS 131,
IBAN_CODE 81, CREDIT_CARD 74, US_SSN 67 (``EXPECTED_SPANS``). ``Sample.source`` is
``fresh/<style>``. Build with ``build_fresh_corpus(seed)``; ``python -m bench.pii_fresh`` checks every span and
prints counts and a few samples.
"""

# ruff: noqa: RUF001  (real spellings use the okina, the dotless i and typographic apostrophes)
from __future__ import annotations

import functools
import ipaddress
import random
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers

from bench.pii_corpus import GoldSpan, Sample

DATA_DIR = Path(__file__).with_name("fresh")
N_TEXTS = 1500
DEFAULT_SEED = 2718
TYPES = (
    "PERSON",
    "LOCATION",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
)
DEFAULT_TITLES = {"m": ("Mr", "Mr.", "Dr", "Dr."), "f": ("Ms", "Ms.", "Mrs", "Dr."), "x": ("Mx", "Dr")}
PARAGRAPH_SHARE = 0.12
EXPECTED_SPANS = {
    "PERSON": 1565,
    "LOCATION": 1064,
    "PHONE_NUMBER": 249,
    "EMAIL_ADDRESS": 160,
    "IP_ADDRESS": 131,
    "IBAN_CODE": 81,
    "CREDIT_CARD": 74,
    "US_SSN": 67,
}


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Person:
    culture: str
    group: str
    order: str  # gf, fg or mono
    gender: str
    given: str
    family: str  # empty for a single name
    titles: tuple[str, ...]


@dataclass(frozen=True)
class Template:
    style: str
    text: str
    trap: bool


@functools.cache
def load_people(data_dir: Path = DATA_DIR) -> list[Person]:
    people: list[Person] = []
    culture = group = order = ""
    titles: dict[str, tuple[str, ...]] = {}
    for n, raw in enumerate((data_dir / "people.txt").read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("=="):
            parts = [p.strip() for p in line[2:].split("|")]
            culture, group, order = parts[0], parts[1], parts[2]
            assert order in ("gf", "fg", "mono"), f"people.txt:{n}: {order}"
            titles = dict(DEFAULT_TITLES)
            if len(parts) > 3:
                for item in parts[3].split():
                    g, _, ts = item.partition(":")
                    titles[g] = tuple(ts.split(","))
            continue
        gender, _, rest = line.partition(" ")
        assert gender in ("m", "f", "x"), f"people.txt:{n}: {line}"
        assert culture, f"people.txt:{n}: a person before any culture"
        if order == "mono":
            assert "/" not in rest, f"people.txt:{n}: {line}"
            given, family = rest.strip(), ""
        else:
            first, sep, second = (p.strip() for p in rest.partition("/"))
            assert sep, f"people.txt:{n}: {line}"
            assert first, f"people.txt:{n}: {line}"
            assert second, f"people.txt:{n}: {line}"
            given, family = (first, second) if order == "gf" else (second, first)
        people.append(Person(culture, group, order, gender, given, family, titles[gender]))
    return people


def _sections(data_dir: Path, name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = ""
    for raw in (data_dir / name).read_text(encoding="utf-8").splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            out.setdefault(current, [])
            continue
        assert current, f"{name}: text before a section: {line}"
        out[current].append(line.replace("\\n", "\n"))
    return out


@functools.cache
def load_templates(data_dir: Path = DATA_DIR) -> list[Template]:
    out: list[Template] = []
    for style, lines in _sections(data_dir, "templates.txt").items():
        for line in lines:
            trap = line.startswith("! ")
            out.append(Template(style, line[2:] if trap else line, trap))
    return out


@functools.cache
def load_lexicon(data_dir: Path = DATA_DIR) -> dict[str, list[str]]:
    return _sections(data_dir, "lexicon.txt")


# ---------------------------------------------------------------------------- pattern values


def luhn_ok(value: str) -> bool:
    digits = [int(c) for c in value if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return len(digits) >= 12 and total % 10 == 0


def _iban_number(compact: str) -> int:
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved))


def iban_ok(value: str) -> bool:
    compact = value.replace(" ", "").upper()
    return bool(re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", compact)) and _iban_number(compact) % 97 == 1


def ssn_ok(value: str) -> bool:
    digits = re.sub(r"[ -]", "", value)
    if not re.fullmatch(r"\d{9}", digits):
        return False
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return 0 < area < 900 and area != 666 and group > 0 and serial > 0


# BBAN layouts: n = digits, a = capital letters, c = either
IBAN_LAYOUTS = {
    "DE": "n8n10",
    "GB": "a4n6n8",
    "FR": "n5n5c11n2",
    "NL": "a4n10",
    "ES": "n4n4n2n10",
    "IT": "a1n5n5c12",
    "BE": "n3n7n2",
    "CH": "n5c12",
    "AT": "n5n11",
    "PL": "n8n16",
    "SE": "n3n17",
    "NO": "n4n6n1",
    "IE": "a4n6n8",
    "PT": "n4n4n11n2",
    "TR": "n5n1c16",
    "SA": "n2c18",
}


def make_iban(rng: random.Random, country: str) -> str:
    bban = ""
    for kind, count in re.findall(r"([nac])(\d+)", IBAN_LAYOUTS[country]):
        pool = {"n": "0123456789", "a": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "c": "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"}[kind]
        bban += "".join(rng.choice(pool) for _ in range(int(count)))
    check = 98 - _iban_number(country + "00" + bban) % 97
    compact = f"{country}{check:02d}{bban}"
    assert iban_ok(compact)
    if rng.random() < 0.35:
        return compact
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


CARD_PREFIXES = (
    ("4", 16, "4444"),
    ("4", 16, "4444"),
    ("51", 16, "4444"),
    ("53", 16, "4444"),
    ("55", 16, "4444"),
    ("2221", 16, "4444"),
    ("2720", 16, "4444"),
    ("34", 15, "465"),
    ("37", 15, "465"),
    ("6011", 16, "4444"),
    ("65", 16, "4444"),
    ("3528", 16, "4444"),
    ("36", 14, "464"),
)


def make_card(rng: random.Random) -> str:
    prefix, length, grouping = rng.choice(CARD_PREFIXES)
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        if luhn_ok(body + check):
            number = body + check
            break
    sep = rng.choice([" ", " ", "-", ""])
    parts, i = [], 0
    for g in grouping:
        parts.append(number[i : i + int(g)])
        i += int(g)
    return sep.join(parts)


def make_ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    group, serial = rng.randint(1, 99), rng.randint(1, 9999)
    sep = rng.choice(["-", "-", "-", " "])
    return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"


def make_ipv4(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if kind < 0.5:
        return f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    first = rng.choice([31, 45, 62, 81, 91, 103, 141, 176, 185, 203, 212])
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def make_ipv6(rng: random.Random) -> str:
    groups = [rng.randint(0, 0xFFFF) for _ in range(8)]
    kind = rng.random()
    if kind < 0.4:
        prefix = rng.choice(["2001:db8", "2a02:8108", "2600:1f18", "fd12:3456"])
        tail = ":".join(f"{g:x}" for g in groups[: rng.randint(1, 3)])
        return str(ipaddress.IPv6Address(f"{prefix}::{tail}"))
    if kind < 0.6:
        return f"fe80::{groups[0]:x}:{groups[1] & 0xFF:x}ff:fe{groups[2] & 0xFF:02x}:{groups[3]:x}"
    value = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
    return value.exploded if kind < 0.75 else str(value)


PHONE_REGIONS = [
    "US",
    "CA",
    "GB",
    "IE",
    "DE",
    "AT",
    "CH",
    "FR",
    "BE",
    "NL",
    "LU",
    "ES",
    "PT",
    "IT",
    "GR",
    "SE",
    "NO",
    "DK",
    "FI",
    "IS",
    "PL",
    "CZ",
    "SK",
    "HU",
    "RO",
    "BG",
    "HR",
    "SI",
    "RS",
    "UA",
    "TR",
    "IL",
    "AE",
    "SA",
    "EG",
    "MA",
    "NG",
    "KE",
    "ZA",
    "GH",
    "ET",
    "IN",
    "PK",
    "BD",
    "LK",
    "NP",
    "CN",
    "HK",
    "TW",
    "JP",
    "KR",
    "SG",
    "MY",
    "ID",
    "PH",
    "TH",
    "VN",
    "AU",
    "NZ",
    "BR",
    "AR",
    "MX",
    "CO",
    "CL",
    "PE",
]
PHONE_FORMATS = ("national", "international", "e164")


def make_phone(rng: random.Random, region: str, fmt: str) -> str:
    kind = rng.choice([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE])
    example = phonenumbers.example_number_for_type(region, kind) or phonenumbers.example_number(region)
    assert example is not None, region
    nsn = str(example.national_number)
    for _ in range(200):
        keep = max(len(nsn) - rng.randint(2, 4), 2)
        digits = nsn[:keep] + "".join(rng.choice("0123456789") for _ in range(len(nsn) - keep))
        number = phonenumbers.parse("+" + str(example.country_code) + digits)
        if phonenumbers.is_valid_number(number) and digits != nsn:
            break
    else:
        number = example
    pnf = {
        "national": phonenumbers.PhoneNumberFormat.NATIONAL,
        "international": phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        "e164": phonenumbers.PhoneNumberFormat.E164,
    }[fmt]
    text = phonenumbers.format_number(number, pnf)
    if fmt != "e164" and kind == phonenumbers.PhoneNumberType.FIXED_LINE and rng.random() < 0.12:
        text += rng.choice([" ext. ", " x", " ext "]) + str(rng.randint(2, 4999))
    return text


def phone_ok(value: str, region: str) -> bool:
    number = re.sub(r"\s*(ext\.?|x)\s*\d+$", "", value)
    return phonenumbers.is_valid_number(phonenumbers.parse(number, region))


# ---------------------------------------------------------------------------- names


def fold(text: str) -> str:
    """ASCII letters of a name, for e-mail addresses."""
    text = text.replace("ß", "ss").replace("ø", "o").replace("Ø", "O").replace("ł", "l").replace("Ł", "L")
    text = text.replace("đ", "d").replace("Đ", "D").replace("ı", "i").replace("æ", "ae").replace("þ", "th")
    text = text.replace("ð", "d")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and c.isalpha()).lower()


def _initials(given: str) -> str:
    out = []
    for token in given.split():
        if token[0].islower():  # a particle
            continue
        out.append("-".join(part[0] + "." for part in token.split("-") if part))
    return " ".join(out)


def full_name(p: Person) -> str:
    if p.order == "mono":
        return p.given
    return f"{p.family} {p.given}" if p.order == "fg" else f"{p.given} {p.family}"


def written(p: Person, form: str, rng: random.Random) -> str:
    """One written form of a person's name: the whole string is the PERSON span."""
    title = rng.choice(p.titles)
    if p.order == "mono":
        if form in ("title", "tfull", "formal") and rng.random() < 0.7:
            return f"{title} {p.given}"
        if form in ("caps",):
            return p.given.upper()
        if form in ("lower", "lgiven"):
            return p.given.lower()
        return p.given
    if form == "formal":
        form = rng.choice(["full", "full", "title", "tfull", "sg", "init", "caps"])
    if form == "full":
        return full_name(p)
    if form == "given":
        return p.given
    if form == "family":
        return p.family
    if form == "title":
        if p.culture == "Japanese" and rng.random() < 0.5:
            return f"{p.family}-san"
        return f"{title} {p.family}"
    if form == "tfull":
        return f"{title} {full_name(p)}"
    if form == "sg":
        if p.order == "fg":
            return f"{p.family.upper()} {p.given}"
        family = p.family.upper() if rng.random() < 0.6 else p.family
        return f"{family}, {p.given}"
    if form == "init":
        if p.order == "fg":
            return f"{p.given[0]}. {p.family}" if rng.random() < 0.3 else full_name(p)
        return f"{_initials(p.given)} {p.family}"
    if form == "caps":
        return full_name(p).upper()
    if form == "lower":
        return full_name(p).lower()
    if form == "lgiven":
        return p.given.lower()
    raise ValueError(form)


STYLE_FORMS = {
    "chat": ["lgiven", "lgiven", "given", "lower", "full"],
    "signature": ["full", "tfull", "full", "caps"],
    "header": ["full", "sg", "full"],
    "form": ["full", "sg", "caps", "full"],
    "voicemail": ["full", "given", "title", "full"],
}
DEFAULT_FORMS = ["full", "full", "full", "title", "tfull", "given", "init", "sg", "caps", "family"]


def make_email(rng: random.Random, p: Person | None, domains: list[str]) -> str:
    domain = rng.choice(domains)
    if p is None:
        local = rng.choice(["support", "billing", "info", "noreply", "hr", "accounts", "ops", "it-help", "dispatch"])
        return f"{local}@{domain}"
    given = fold(p.given.split()[0]) or "user"
    family = fold(p.family.split()[-1] if p.family else "") or fold(p.given)
    pattern = rng.choice(["g.f", "g.f", "gf", "if", "f.g", "g_f", "g"])
    local = {
        "g.f": f"{given}.{family}",
        "gf": f"{given}{family}",
        "if": f"{given[0]}{family}",
        "f.g": f"{family}.{given}",
        "g_f": f"{given}_{family}",
        "g": f"{given}{rng.randint(2, 99)}",
    }[pattern]
    return f"{local}@{domain}"


# ---------------------------------------------------------------------------- building


@dataclass
class Stats:
    people: set[int] = field(default_factory=set)
    trap_texts: int = 0
    no_pii_texts: int = 0
    paragraphs: int = 0
    phone_regions: Counter[str] = field(default_factory=Counter)
    phone_formats: Counter[str] = field(default_factory=Counter)
    phones: dict[str, str] = field(default_factory=dict)  # value as written -> region
    styles: Counter[str] = field(default_factory=Counter)


SLOT = re.compile(r"\{([A-Z]+[0-9]?)(?::([a-z0-9]+))?\}")
PRONOUNS = {"SHE": ("he", "she", "they"), "HER": ("his", "her", "their"), "HIM": ("him", "her", "them")}
TRAP_SLOTS = {"BRAND", "PRODUCT", "EPONYM", "ELOC", "AIRPORT"}
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


class _Builder:
    def __init__(self, seed: int, data_dir: Path = DATA_DIR, source: str = "fresh") -> None:
        self.rng = random.Random(seed)
        self.data_dir = data_dir
        self.source = source
        self.people = load_people(data_dir)
        self.lex = load_lexicon(data_dir)
        self.stats = Stats()
        order = list(range(len(self.people)))
        self.rng.shuffle(order)
        self._people_queue = order
        self._regions = list(PHONE_REGIONS)
        self.rng.shuffle(self._regions)
        self._phone_i = 0

    def next_person(self, with_family: bool = False) -> int:
        """The next person of a shuffled round, so that everyone is used before anyone twice."""
        if not self._people_queue:
            order = list(range(len(self.people)))
            self.rng.shuffle(order)
            self._people_queue = order
        for i in range(len(self._people_queue) - 1, -1, -1):
            if not with_family or self.people[self._people_queue[i]].family:
                return self._people_queue.pop(i)
        return next(i for i, p in enumerate(self.people) if p.family)

    def phone(self, fmt: str | None) -> str:
        region = self._regions[self._phone_i % len(self._regions)]
        self._phone_i += 1
        fmt = fmt or self.rng.choice(PHONE_FORMATS)
        if region in ("US", "CA") and fmt == "national" and self.rng.random() < 0.3:
            fmt = "international"
        value = make_phone(self.rng, region, fmt)
        self.stats.phone_regions[region] += 1
        self.stats.phone_formats[fmt] += 1
        self.stats.phones[value] = region
        return value

    def address(self) -> list[tuple[str, str | None]]:
        rng = self.rng
        street, city = rng.choice(self.lex["street"]), rng.choice(self.lex["city"])
        number = str(rng.randint(1, 240))
        if rng.random() < 0.5:
            parts: list[tuple[str, str | None]] = [(number + " ", None), (street, "LOCATION")]
            parts += [(", ", None), (city, "LOCATION")]
        else:
            parts = [(street, "LOCATION"), (f" {number}, {rng.randint(1000, 99999)} ", None), (city, "LOCATION")]
        if rng.random() < 0.3:
            parts += [(", ", None), (rng.choice(self.lex["country"]), "LOCATION")]
        return parts

    def render(self, text: str, style: str, persons: dict[str, int]) -> tuple[str, list[GoldSpan], bool]:
        rng = self.rng
        out: list[str] = []
        spans: list[GoldSpan] = []
        pos = 0
        trap = False

        def emit(value: str, label: str | None) -> None:
            nonlocal pos
            if label:
                spans.append(GoldSpan(label, pos, pos + len(value)))
            out.append(value)
            pos += len(value)

        last = 0
        for m in SLOT.finditer(text):
            emit(text[last : m.start()], None)
            last = m.end()
            name, arg = m.group(1), m.group(2)
            if name in TRAP_SLOTS:
                trap = True
            if re.fullmatch(r"P\d", name):
                if name not in persons:
                    persons[name] = self.next_person(with_family=arg in ("family", "sg"))
                p = self.people[persons[name]]
                self.stats.people.add(persons[name])
                form = arg or rng.choice(STYLE_FORMS.get(style, DEFAULT_FORMS))
                if form == "poss":
                    emit(written(p, rng.choice(["full", "given", "title"]), rng), "PERSON")
                    emit(rng.choice(["'s", "'s", "\u2019s"]), None)
                else:
                    emit(written(p, form, rng), "PERSON")
            elif re.fullmatch(r"(SHE|HER|HIM)\d", name):
                key = "P" + name[-1]
                if key not in persons:
                    persons[key] = self.next_person()
                gender = self.people[persons[key]].gender
                word = PRONOUNS[name[:-1]]["mfx".index(gender)]
                emit(word.capitalize() if arg == "cap" else word, None)
            elif name == "EMAIL":
                person = None
                if arg:
                    if arg.upper() not in persons:
                        persons[arg.upper()] = self.next_person()
                    person = self.people[persons[arg.upper()]]
                elif rng.random() < 0.6:
                    person = rng.choice(self.people)
                emit(make_email(rng, person, self.lex["domain"]), "EMAIL_ADDRESS")
            elif name == "PHONE":
                emit(self.phone(arg), "PHONE_NUMBER")
            elif name == "CARD":
                emit(make_card(rng), "CREDIT_CARD")
            elif name == "IBAN":
                emit(make_iban(rng, arg.upper() if arg else rng.choice(sorted(IBAN_LAYOUTS))), "IBAN_CODE")
            elif name == "SSN":
                emit(make_ssn(rng), "US_SSN")
            elif name in ("IP", "IP4", "IP6"):
                v6 = name == "IP6" or (name == "IP" and rng.random() < 0.35)
                emit(make_ipv6(rng) if v6 else make_ipv4(rng), "IP_ADDRESS")
            elif name in ("CITY", "COUNTRY", "STREET", "ELOC", "AIRPORT"):
                key = {"CITY": "city", "COUNTRY": "country", "STREET": "street", "ELOC": "eponymous_place"}.get(
                    name, "airport"
                )
                emit(rng.choice(self.lex[key]), "LOCATION")
            elif name == "ADDR":
                for value, label in self.address():
                    emit(value, label)
            elif name in ("BRAND", "PRODUCT", "EPONYM", "ROLE", "DEPT"):
                emit(rng.choice(self.lex[name.lower()]), None)
            elif name == "DAY":
                emit(rng.choice(DAYS), None)
            elif name == "MONTH":
                emit(rng.choice(MONTHS), None)
            elif name == "DATE":
                day, month = rng.randint(1, 28), rng.randint(1, 12)
                emit(
                    rng.choice(
                        [f"{day} {MONTHS[month - 1]}", f"{MONTHS[month - 1]} {day}", f"2025-{month:02d}-{day:02d}"]
                    ),
                    None,
                )
            elif name == "TIME":
                emit(
                    rng.choice(
                        [f"{rng.randint(7, 18)}:{rng.choice(['00', '15', '30', '45'])}", f"{rng.randint(1, 11)} pm"]
                    ),
                    None,
                )
            elif name == "N":
                emit(str(rng.randint(2, 60)), None)
            elif name == "REF":
                emit(f"{rng.choice(['INC', 'REQ', 'CS', 'TCK', 'PO', 'SR'])}-{rng.randint(10000, 999999)}", None)
            elif name == "AMOUNT":
                emit(
                    f"{rng.choice(['€', '$', '£', 'CHF ', 'SGD '])}{rng.randint(20, 90000):,}.{rng.randint(0, 99):02d}",
                    None,
                )
            else:
                raise ValueError(f"unknown slot {m.group(0)} in {text!r}")
        emit(text[last:], None)
        return "".join(out), spans, trap

    def paragraph(self, fillers: list[Template], lates: list[Template]) -> tuple[str, list[GoldSpan], bool]:
        rng = self.rng
        persons: dict[str, int] = {}
        picked = rng.sample(fillers, 14)
        target = rng.randint(95, 200)
        body: list[Template] = []
        words = 0
        for t in picked:
            if words >= target:
                break
            body.append(t)
            words += len(t.text.split())
        late = rng.choice(lates)
        at = len(body) if rng.random() < 0.6 else max(len(body) - 1, 1)
        parts = [*body[:at], late, *body[at:]]
        text, spans, trap = "", [], False
        for t in parts:
            piece, piece_spans, piece_trap = self.render(t.text, "paragraph", persons)
            offset = len(text) + (1 if text else 0)
            text = f"{text} {piece}" if text else piece
            spans += [GoldSpan(s.entity_type, s.start + offset, s.end + offset) for s in piece_spans]
            trap = trap or piece_trap or t.trap
        return text, spans, trap

    def build(self, n: int) -> list[Sample]:
        templates = load_templates(self.data_dir)
        by_style: dict[str, list[Template]] = {}
        for t in templates:
            by_style.setdefault(t.style, []).append(t)
        fillers, lates = by_style.pop("filler"), by_style.pop("late")
        styles = sorted(by_style)
        samples: list[Sample] = []
        # every template is used at least once, then styles are drawn evenly
        queue = [t for s in styles for t in by_style[s]]
        self.rng.shuffle(queue)
        n_paragraphs = round(n * PARAGRAPH_SHARE)
        while len(queue) < n - n_paragraphs:
            style = self.rng.choice(styles)
            queue.append(self.rng.choice(by_style[style]))
        plan: list[Template | None] = [*queue[: n - n_paragraphs], *([None] * n_paragraphs)]
        self.rng.shuffle(plan)
        for item in plan:
            if item is None:
                text, spans, trap = self.paragraph(fillers, lates)
                style = "paragraph"
                self.stats.paragraphs += 1
            else:
                text, spans, trap = self.render(item.text, item.style, {})
                trap = trap or item.trap
                style = item.style
            self.stats.styles[style] += 1
            self.stats.trap_texts += trap
            self.stats.no_pii_texts += not spans
            samples.append(
                Sample(text=text, spans=sorted(spans, key=lambda s: s.start), source=f"{self.source}/{style}")
            )
        return samples


def _build(
    seed: int = DEFAULT_SEED, n: int = N_TEXTS, data_dir: Path = DATA_DIR, source: str = "fresh"
) -> tuple[list[Sample], Stats]:
    builder = _Builder(seed, data_dir, source)
    samples = builder.build(n)
    return samples, builder.stats


def build_fresh_corpus(seed: int = DEFAULT_SEED) -> list[Sample]:
    """The third held-out corpus: ``N_TEXTS`` seeded texts with exact gold spans."""
    return _build(seed)[0]


def check_sample(sample: Sample) -> None:
    """Spans in range, trimmed, of a known type and not overlapping."""
    end = -1
    for span in sorted(sample.spans, key=lambda s: s.start):
        assert span.entity_type in TYPES, span
        assert 0 <= span.start < span.end <= len(sample.text), (span, sample.text)
        value = sample.text[span.start : span.end]
        assert value, (span, sample.text)
        assert value == value.strip(), (value, sample.text)
        assert span.start >= end, ("overlap", span, sample.text)
        end = span.end


def check_value(entity_type: str, value: str, stats: Stats) -> None:
    """A pattern value passes its type's own check (Luhn, mod-97, SSN ranges, IP syntax, a
    valid number in the region it was made for)."""
    if entity_type == "CREDIT_CARD":
        assert luhn_ok(value), value
    elif entity_type == "IBAN_CODE":
        assert iban_ok(value), value
    elif entity_type == "US_SSN":
        assert ssn_ok(value), value
    elif entity_type == "IP_ADDRESS":
        ipaddress.ip_address(value)
    elif entity_type == "PHONE_NUMBER":
        assert phone_ok(value, stats.phones[value]), value


def check_spans(samples: list[Sample], stats: Stats, source: str) -> set[str]:
    """Every span of a built corpus exact, typed, valid and alone (and the labelling
    conventions a PERSON or an e-mail address follows); the types seen."""
    seen: set[str] = set()
    for sample in samples:
        check_sample(sample)  # in range, trimmed, known type, no overlaps
        assert sample.source.startswith(f"{source}/"), sample.source
        for span in sample.spans:
            value = sample.text[span.start : span.end]
            seen.add(span.entity_type)
            check_value(span.entity_type, value, stats)
            if span.entity_type == "PHONE_NUMBER":
                if value.startswith("+") and " " not in value:  # E.164 parses without a region
                    assert phonenumbers.is_valid_number(phonenumbers.parse(value)), value
            elif span.entity_type == "PERSON":
                assert not value.endswith(("'s", "\u2019s")), value
                assert not value.startswith("@"), value
            elif span.entity_type == "EMAIL_ADDRESS":
                assert value.count("@") == 1, value
                assert " " not in value, value
    return seen


def person_strings(samples: list[Sample]) -> set[str]:
    """Every PERSON value of ``samples``, as written."""
    return {s.text[g.start : g.end] for s in samples for g in s.spans if g.entity_type == "PERSON"}


def name_clashes(
    people: list[Person], samples: list[Sample], other_samples: list[Sample]
) -> tuple[list[str], list[str]]:
    """How a corpus of ``people`` (built as ``samples``) is not new against ``other_samples``:
    the people whose full name, in any written arrangement, is a PERSON value there, and the
    PERSON values the two share that are more than a lone given or family name (with or
    without a title). A new corpus has neither."""
    other = {v.casefold() for v in person_strings(other_samples)}
    lone_parts: set[str] = set()
    clashes: list[str] = []
    for p in people:
        for part in (p.given, p.family):
            if part:
                lone_parts |= {part.casefold(), f"{part}-san".casefold()}
                lone_parts |= {f"{t} {part}".casefold() for t in p.titles}
        whole = {full_name(p)}
        if p.family:
            whole |= {f"{p.given} {p.family}", f"{p.family} {p.given}", f"{p.family}, {p.given}"}
            whole |= {f"{_initials(p.given)} {p.family}", f"{p.given[0]}. {p.family}"}
        whole |= {f"{t} {w}" for w in list(whole) for t in p.titles}
        if {w.casefold() for w in whole} & other:
            clashes.append(full_name(p))
    shared = sorted(v for v in person_strings(samples) if v.casefold() in other and v.casefold() not in lone_parts)
    return clashes, shared


# What a varied cast of people holds: particles, prefixes, hyphens, the okina, diacritics.
NAME_SHAPES = (" van ", " de la ", " bin ", " Ó ", " ter ", " zu ", " al-", "Mac", "O'", "N'", "-", "\u02bb", "í")
WESTERN_GROUPS = frozenset({"Western Europe", "Northern Europe", "Southern Europe", "North America", "Oceania"})


def missing_variety(people: list[Person]) -> list[str]:
    """What a varied cast lacks: name shapes no one has, and a Western majority."""
    text = " ".join(full_name(p) for p in people).lower()
    missing = [shape for shape in NAME_SHAPES if shape.lower() not in text]
    if sum(p.group not in WESTERN_GROUPS for p in people) <= len(people) / 2:
        missing.append("a non-Western majority")
    return missing


def check_and_describe(
    seed: int, data_dir: Path = DATA_DIR, source: str = "fresh", expected: dict[str, int] | None = None
) -> None:
    """Builds a corpus of this generator, checks every span and value, and prints its counts
    and a few samples (``python -m bench.pii_fresh`` and ``python -m bench.pii_blind``)."""
    samples, stats = _build(seed, N_TEXTS, data_dir, source)
    check_spans(samples, stats, source)
    people = load_people(data_dir)
    spans = Counter(span.entity_type for s in samples for span in s.spans)
    words = [len(s.text.split()) for s in samples if s.source == f"{source}/paragraph"]
    print(f"{len(samples)} texts, seed {seed}; all spans checked")
    print(
        f"people: {len(people)} of {len({p.culture for p in people})} cultures "
        f"in {len({p.group for p in people})} regions; used {len(stats.people)}"
    )
    templates = load_templates(data_dir)
    pieces = Counter(t.style in ("filler", "late") for t in templates)
    traps = sum(t.trap for t in templates if t.style not in ("filler", "late"))
    print(f"templates: {pieces[False]} ({traps} traps), paragraph sentences: {pieces[True]}")
    print(f"texts per style: {dict(sorted(stats.styles.items()))}")
    print(f"paragraphs: {len(words)}, {min(words)}-{max(words)} words")
    print(f"trap texts: {stats.trap_texts} ({stats.trap_texts / len(samples):.0%}); no-PII texts: {stats.no_pii_texts}")
    print(f"phones: {len(stats.phone_regions)} regions, formats {dict(stats.phone_formats)}")
    print(f"spans: {dict(spans.most_common())}")
    if expected is not None and dict(spans) != expected:
        print(f"WARNING: span counts differ from the expected {expected}")
    rng = random.Random(seed)
    for s in rng.sample(samples, 6):
        print(f"\n[{s.source}] {s.text}")
        for span in s.spans:
            print(f"    {span.entity_type:13s} {s.text[span.start : span.end]!r}")


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SEED
    check_and_describe(seed, expected=EXPECTED_SPANS if seed == DEFAULT_SEED else None)


if __name__ == "__main__":
    main()
