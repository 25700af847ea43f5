"""Held-out PII evaluation corpus (offline, deterministic).

Written apart from the detector's own training and tuning data, to measure whether the
PERSON detector generalizes to names and texts it was never built on. Everything here is
hand-written for this corpus: the names (``bench/heldout/names.txt``, 80+ cultures and
spelling traditions, no name generator) and the templates (``bench/heldout/templates.txt``,
business text: chats, tickets, e-mails, CRM notes, HR/finance, meetings, transcripts, and
precision traps). Pattern values are generated here: phone numbers valid for their country
(``phonenumbers`` example numbers with varied digits), Luhn-valid cards, IBANs with valid
check digits, SSNs, IPv4/IPv6, and e-mail addresses.

Labeling conventions (what the gold spans mean):
- PERSON spans include a title before the name (Dr., Ms, Sir, Chief, Sheikh, Pak, Khun,
  Herr, Mme) and a post-nominal after it (PhD, MBA, Jr., III, Esq.), and suffixed
  honorifics written as one word with the name (Mehmet Bey, Tanaka-san): the product
  promises one detection covers them. A possessive "'s" is outside the span.
- LOCATION: cities, countries, airports and streets, including streets, airports and
  cities named after people ("Nelson Mandela Boulevard", "Jomo Kenyatta International
  Airport", "Ho Chi Minh City", "Wellington"); "the" before a country is outside the span.
- Organizations, brands, products, languages, holidays, weekdays, months, departments and
  job titles are left unlabeled: they must not be reported as PERSON (a PERSON detection
  there counts as a false positive in ``bench.pii_quality.score``). The same holds for a
  company named after a person (Dangote Cement, Koç Holding) and a word that is also a
  name used as a word ("Grace period", "Will the update...", "Bill me later").
- A name inside an e-mail address is not a PERSON span; the address is one EMAIL_ADDRESS.

Usage: ``python -m bench.pii_heldout`` prints counts per type, section and culture group,
runs the span self-check and shows a few samples.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers

from bench.pii_corpus import GoldSpan, Sample

DATA = Path(__file__).with_name("heldout")
SEED = 4242

HELDOUT_SOURCES: dict[str, str] = {
    "chat": "support and team chat lines: first names, lowercase and ALL CAPS names, handles, emoji",
    "ticket": "ticket fields and notes: Requester/Assignee/Account holder/Beneficiary fields, 'Surname, Given'",
    "email": "e-mails with greetings, titles, signatures, headers (From/To), quoted replies, auto-replies",
    "crm": "CRM notes, account and lead records, shift and account handovers",
    "hr_finance": "HR and finance: payroll, remittance, expense claims, offers, reviews, payment runs",
    "meeting": "meeting notes, minutes, attendee and guest lists, action items, panels",
    "transcript": "call and meeting transcripts with speaker labels",
    "traps": "precision traps: places, companies, products, weekdays, months, job titles, name-like words",
}
SECTION_SIZES: dict[str, int] = {
    "chat": 330,
    "ticket": 230,
    "email": 240,
    "crm": 180,
    "hr_finance": 200,
    "meeting": 170,
    "transcript": 130,
    "traps": 320,
}
GOLD_TYPES = [
    "PERSON",
    "LOCATION",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
]


# ---------------------------------------------------------------------------- names


@dataclass(frozen=True)
class Person:
    full: str
    given: str
    family: str
    call: str
    gender: str  # m, f, x
    culture: str
    group: str
    family_first: bool
    init_family: bool  # initials form "R. Karthikeyan" (family initial before the given name)


def load_names(path: Path | None = None) -> list[Person]:
    """Parse ``names.txt`` (format described at its top)."""
    people: list[Person] = []
    culture = group = ""
    opts: dict[str, str] = {}
    for raw in (path or DATA / "names.txt").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            head, _, rest = line.partition("]")
            culture = head[1:]
            opts = dict(kv.split("=", 1) for kv in rest.split())
            group = opts["group"]
            continue
        gender, _, body = line.partition(" ")
        fields = [f.strip() for f in body.split("|")]
        if fields[0].startswith("="):
            full, family, call = fields[0][1:], fields[1], fields[2] or fields[0][1:]
            given = _without(full, family)
            if given == full and family:  # family name in the middle (Winnie Leung Mei-kuen)
                given = call
            family_first = bool(family) and full.startswith(family + " ")
        else:
            given, family = fields[0], fields[1]
            family_first = opts.get("order") == "family"
            full = f"{family} {given}" if family_first else f"{given} {family}"
            if len(fields) > 2:
                call = fields[2]
            elif opts.get("call") == "last":
                call = given.split()[-1]
            elif family_first:
                call = given
            else:
                call = given.split()[0]
        people.append(
            Person(full, given, family, call, gender, culture, group, family_first, opts.get("init") == "family")
        )
    return people


def _without(full: str, family: str) -> str:
    if not family:
        return full
    if full.startswith(family + " "):
        return full[len(family) + 1 :]
    if full.endswith(" " + family):
        return full[: -len(family) - 1]
    return full


# Titles used before the full name or the family name, by gender (m, f, x).
_TITLES = {
    "m": ["Mr", "Mr", "Mr.", "Mr.", "Dr.", "Dr", "Prof.", "Rev."],
    "f": ["Ms", "Ms", "Ms.", "Mrs", "Mrs.", "Dr.", "Dr", "Prof.", "Rev."],
    "x": ["Mx", "Mx.", "Dr.", "Dr", "Prof.", "Rev."],
}
# Titles only used before a full name (never "Sir Mensah"), where knighthoods are usual.
_FULL_ONLY_TITLES = {"m": ["Sir"], "f": ["Dame"], "x": []}
_KNIGHTED = {"english", "welsh", "scottish_gaelic", "irish_gaelic", "maori", "samoan", "cantonese"}
# Titles that belong to a few cultures (before the full name).
_CULTURE_TITLES: dict[str, dict[str, list[str]]] = {
    "yoruba": {"m": ["Chief", "Engr.", "Barr."], "f": ["Chief", "Engr.", "Barr."], "x": ["Engr."]},
    "igbo": {"m": ["Chief", "Engr.", "Barr."], "f": ["Chief", "Barr."], "x": ["Engr."]},
    "hausa": {"m": ["Alhaji", "Engr."], "f": ["Hajiya"], "x": []},
    "arabic_gulf": {"m": ["Sheikh", "Eng."], "f": ["Sheikha"], "x": []},
    "somali": {"m": ["Sheikh"], "f": [], "x": []},
    "filipino": {"m": ["Engr.", "Atty."], "f": ["Engr.", "Atty."], "x": ["Atty."]},
    "malay": {"m": ["Datuk", "Tuan"], "f": ["Datin", "Puan"], "x": []},
}
# How a culture addresses someone politely: (male, female, where, which part of the name).
_HONORIFICS: dict[str, tuple[str, str, str, str]] = {
    "indonesian": ("Pak", "Bu", "pre", "call"),
    "javanese": ("Pak", "Bu", "pre", "call"),
    "thai": ("Khun", "Khun", "pre", "call"),
    "amharic": ("Ato", "W/ro", "pre", "call"),
    "burmese": ("U", "Daw", "pre", "full"),
    "filipino": ("Kuya", "Ate", "pre", "call"),
    "swahili_east_african": ("Bwana", "Mama", "pre", "call"),
    "malay": ("Encik", "Puan", "pre", "call"),
    "hausa": ("Alhaji", "Hajiya", "pre", "full"),
    "turkish": ("Bey", "Hanım", "post", "call"),  # noqa: RUF001 (Turkish dotless i)
    "hindi": ("Shri", "Smt.", "pre", "full"),
    "marathi": ("Shri", "Smt.", "pre", "full"),
    "sotho_tswana": ("Ntate", "Mme", "pre", "family"),
    "arabic_gulf": ("Sheikh", "Sheikha", "pre", "full"),
    "yoruba": ("Chief", "Chief", "pre", "full"),
    "igbo": ("Chief", "Lolo", "pre", "full"),
    "vietnamese": ("Anh", "Chị", "pre", "call"),
    "khmer": ("Lok", "Lok Srey", "pre", "call"),
    "japanese": ("-san", "-san", "suffix", "family"),
    "german": ("Herr", "Frau", "pre", "family"),
    "french": ("M.", "Mme", "pre", "family"),
    "hispanic": ("Sr.", "Sra.", "pre", "family"),
    "brazilian": ("Seu", "Dona", "pre", "call"),
    "italian": ("Sig.", "Sig.ra", "pre", "family"),
    "polish": ("Pan", "Pani", "pre", "call"),
    "dutch_flemish": ("dhr.", "mevr.", "pre", "full"),
}
_POST_PROFESSIONAL = [
    "PhD",
    "Ph.D.",
    "MD",
    "M.D.",
    "B.Eng.",
    "MBA",
    "CPA",
    "MSc",
    "RN",
    "FRCS",
    "CFA",
    "ACCA",
    "P.Eng.",
    "DDS",
    "LLB",
]
_POST_GENERATIONAL = ["Jr.", "Jr.", "Sr.", "II", "III", "IV"]
_US_STYLE = {"english", "african_american", "hawaiian", "navajo", "filipino"}


# ---------------------------------------------------------------------------- other values

_LEX = json.loads((DATA / "lexicon.json").read_text(encoding="utf-8"))
_CITY_LIST: list[str] = _LEX["cities"] + _LEX["name_like_cities"]
_COUNTRIES: list[str] = _LEX["countries"]
_CAPITALS: list[tuple[str, str]] = [(c, city) for c, city in _LEX["capitals"]]
_STREETS: list[str] = _LEX["streets_named_after_people"]  # LOCATION: the street name, without a house number
_AIRPORTS: list[str] = _LEX["airports"]
_ORGS: list[str] = _LEX["organizations"]
_PRODUCTS: list[str] = _LEX["products"]
_DAYS: list[str] = _LEX["days"]
_MONTHS: list[str] = _LEX["months"]
_DEPTS: list[str] = _LEX["departments"]
_ROLES: list[str] = _LEX["job_titles"]
_LANGS: list[str] = _LEX["languages"]
_HOLIDAYS: list[str] = _LEX["holidays"]
_COMPANY_STEMS: list[str] = _LEX["email_company_stems"]
_WEBMAIL: list[str] = _LEX["webmail_domains"]
_CULTURE_TLD: dict[str, str] = _LEX["email_tld_by_culture"]
_ROLE_LOCALS = ["support", "billing", "hr", "payroll", "accounts", "it-helpdesk", "info", "noreply", "finance"]

# Phone regions: the 25 the brief names, then more.
PHONE_REGIONS = [
    *("ZA", "NG", "KE", "IN", "VN", "ID", "PH", "BR", "MX", "TR", "EG", "AE", "SA", "KR", "JP", "CN", "HK"),
    *("AU", "NZ", "GB", "IE", "FR", "DE", "PL", "RU", "US", "GH", "ET", "PK", "TH", "MA", "BD", "LK", "NP"),
    *("KZ", "GE", "AM", "IS", "HU", "FI", "GR", "RO", "PT", "ES", "IT", "NL"),
]
_TRUNK_ZERO_STYLE = {"GB", "DE", "NL", "IE"}  # "+44 (0)20 ..." is written there

# BBAN layouts: fixed bank codes to pick from (or ""), then n digits / a letters.
_IBAN_SPECS: dict[str, tuple[list[str], str]] = {
    "DE": ([""], "18n"),
    "FR": ([""], "23n"),
    "NL": (["ABNA", "INGB", "RABO", "TRIO", "SNSB"], "10n"),
    "ES": ([""], "20n"),
    "IT": ([""], "1a22n"),
    "GB": (["NWBK", "BARC", "LOYD", "HBUK", "MIDL"], "14n"),
    "PL": ([""], "24n"),
    "PT": ([""], "21n"),
    "AT": ([""], "16n"),
    "CH": ([""], "17n"),
    "BE": ([""], "12n"),
    "IE": (["AIBK", "BOFI", "IPBS"], "14n"),
    "SE": ([""], "20n"),
    "NO": ([""], "11n"),
    "DK": ([""], "14n"),
    "FI": ([""], "14n"),
    "TR": ([""], "22n"),
    "SA": ([""], "20n"),
    "AE": ([""], "19n"),
    "BR": ([""], "23n1a1n"),
    "RO": (["BTRL", "RNCB", "BRDE", "INGB"], "16n"),
    "HU": ([""], "24n"),
    "CZ": ([""], "20n"),
    "GR": ([""], "23n"),
    "EG": ([""], "25n"),
    "GE": (["TB", "BG"], "16n"),
    "PK": (["HABB", "MUCB", "UNIL"], "16n"),
    "IS": ([""], "22n"),
    "EE": ([""], "16n"),
    "KZ": ([""], "16n"),
}


# ---------------------------------------------------------------------------- value makers


def luhn_ok(number: str) -> bool:
    digits = [int(d) for d in number]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    compact = iban.replace(" ", "")
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _fold(text: str) -> str:
    """ASCII letters and digits of a name, for e-mail local parts."""
    folds = [("ł", "l"), ("ı", "i"), ("ø", "o"), ("æ", "ae"), ("œ", "oe"), ("ß", "ss"), ("þ", "th"), ("ð", "d")]  # noqa: RUF001
    for a, b in folds:
        text = text.replace(a, b).replace(a.upper(), b)
    text = text.replace("đ", "d").replace("Đ", "d")
    plain = unicodedata.normalize("NFKD", text)
    return "".join(c for c in plain.lower() if c.isascii() and c.isalnum())


class _Maker:
    def __init__(self, rng: random.Random, people: list[Person]) -> None:
        self.rng = rng
        self.people = people
        self.deck: list[Person] = []
        self.last_phone = ("", "")  # (region, format) of the latest phone number

    # -- people
    def draw(self, taken: list[Person]) -> Person:
        while True:
            if not self.deck:
                self.deck = list(self.people)
                self.rng.shuffle(self.deck)
            p = self.deck.pop()
            if p not in taken:
                return p

    # -- pattern values
    def phone(self) -> str:
        rng = self.rng
        region = rng.choice(PHONE_REGIONS + PHONE_REGIONS[:25])  # the 25 named ones twice as often
        kinds = [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]
        example = phonenumbers.example_number_for_type(region, rng.choice(kinds))
        example = example or phonenumbers.example_number(region)
        digits = str(example.national_number)
        num = example
        for _ in range(300):
            keep = max(2, len(digits) - 6)
            tail = "".join(rng.choice("0123456789") for _ in range(len(digits) - keep))
            candidate = phonenumbers.parse(f"+{example.country_code}{digits[:keep]}{tail}")
            if phonenumbers.is_valid_number(candidate) and candidate.national_number != example.national_number:
                num = candidate
                break
        fmt = phonenumbers.PhoneNumberFormat
        intl = phonenumbers.format_number(num, fmt.INTERNATIONAL)
        r = rng.random()
        if r < 0.30:
            style, text = "national", phonenumbers.format_number(num, fmt.NATIONAL)
        elif r < 0.65:
            style, text = "international", intl
        elif r < 0.85:
            style, text = "E.164", phonenumbers.format_number(num, fmt.E164)
        elif r < 0.90:
            style, text = "00-prefix", "00" + intl[1:]
        elif r < 0.95 or region not in _TRUNK_ZERO_STYLE:
            style, text = "international-dashes", intl.replace(" ", "-")
        else:
            cc, _, rest = intl.partition(" ")
            style, text = "international-(0)", f"{cc} (0){rest}"
        self.last_phone = (region, style)
        return text

    def card(self) -> str:
        rng = self.rng
        brand = rng.choices(
            ["visa", "mc", "mc2", "amex", "discover", "jcb", "unionpay", "diners"], [35, 25, 5, 12, 6, 6, 6, 5]
        )[0]
        prefix, length = {
            "visa": ("4", 16),
            "mc": (str(rng.randint(51, 55)), 16),
            "mc2": (str(rng.randint(2221, 2720)), 16),
            "amex": (rng.choice(["34", "37"]), 15),
            "discover": (rng.choice(["6011", "65"]), 16),
            "jcb": (str(rng.randint(3528, 3589)), 16),
            "unionpay": ("62", 16),
            "diners": ("36", 14),
        }[brand]
        body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
        number = next(body + d for d in "0123456789" if luhn_ok(body + d))
        style = rng.random()
        if style < 0.4:
            return number
        sep = " " if style < 0.85 else "-"
        if length == 15:
            return sep.join([number[:4], number[4:10], number[10:]])
        if length == 14:
            return sep.join([number[:4], number[4:10], number[10:]])
        return sep.join(number[i : i + 4] for i in range(0, 16, 4))

    def iban(self) -> str:
        rng = self.rng
        country = rng.choice(list(_IBAN_SPECS))
        banks, layout = _IBAN_SPECS[country]
        bban = rng.choice(banks)
        for count, kind in re.findall(r"(\d+)([na])", layout):
            alphabet = "0123456789" if kind == "n" else "ABCDEFGHIJKLMNOPRSTUVWXYZ"
            bban += "".join(rng.choice(alphabet) for _ in range(int(count)))
        moved = bban + country + "00"
        check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
        iban = f"{country}{check:02d}{bban}"
        assert iban_ok(iban), iban
        if rng.random() < 0.55:
            return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        return iban

    def ssn(self) -> str:
        rng = self.rng
        while True:
            area = rng.randint(1, 899)
            group, serial = rng.randint(1, 99), rng.randint(1, 9999)
            digits = f"{area:03d}{group:02d}{serial:04d}"
            if area == 666 or len(set(digits)) == 1 or digits in {"078051120", "219099999", "123456789"}:
                continue
            break
        r = rng.random()
        if r < 0.8:
            return f"{digits[:3]}-{digits[3:5]}-{digits[5:]}"
        if r < 0.92:
            return f"{digits[:3]} {digits[3:5]} {digits[5:]}"
        return digits

    def ipv4(self) -> str:
        rng = self.rng
        if rng.random() < 0.2:
            return rng.choice(
                [
                    f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                    f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                    f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                ]
            )
        while True:
            addr = ipaddress.IPv4Address(rng.randint(0x01000000, 0xDFFFFFFF))
            if addr.is_global and str(addr).split(".")[-1] not in {"0", "255"}:
                return str(addr)

    def ipv6(self) -> str:
        rng = self.rng
        if rng.random() < 0.1:
            return f"fe80::{rng.randint(1, 0xFFFF):x}:{rng.randint(1, 0xFFFF):x}:{rng.randint(1, 0xFFFF):x}"
        head = rng.choice([0x2001, 0x2400, 0x2405, 0x2600, 0x2804, 0x2A00, 0x2A01, 0x2A02, 0x2C0F])
        groups = [head] + [rng.randint(0, 0xFFFF) for _ in range(7)]
        if rng.random() < 0.7:  # a run of zeros, so the short form has "::"
            start = rng.randint(2, 5)
            for i in range(start, min(8, start + rng.randint(2, 4))):
                groups[i] = 0
        addr = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
        return addr.exploded if rng.random() < 0.15 else addr.compressed

    def ip(self) -> str:
        return self.ipv4() if self.rng.random() < 0.75 else self.ipv6()

    def email_for(self, p: Person) -> str:
        rng = self.rng
        g = _fold(p.call.split()[0]) or _fold(p.given) or "user"
        f = _fold(p.family)
        nn = str(rng.randint(1, 99))
        if f:
            local = rng.choice(
                [
                    f"{g}.{f}",
                    f"{g[0]}{f}",
                    f"{g}{f}",
                    f"{g}_{f}",
                    f"{f}.{g}",
                    f"{g}.{f}{nn}",
                    f"{f}{g[0]}",
                    f"{g[0]}.{f}",
                ]
            )
        else:
            local = rng.choice([g, f"{g}{nn}", f"{g}.{nn}"])
        if rng.random() < 0.05:
            local += "+" + rng.choice(["invoices", "work", "shop"])
        r = rng.random()
        if r < 0.5:
            domain = f"{rng.choice(_COMPANY_STEMS)}.{_CULTURE_TLD[p.culture]}"
        elif r < 0.85:
            domain = rng.choice(_WEBMAIL)
        else:
            domain = f"{rng.choice(_COMPANY_STEMS)}.com"
        return f"{local}@{domain}"

    def role_email(self) -> str:
        rng = self.rng
        tld = rng.choice(["com", "co.za", "com.ng", "co.ke", "in", "de", "fr", "com.br", "co.jp", "ae", "pl"])
        return f"{rng.choice(_ROLE_LOCALS)}@{rng.choice(_COMPANY_STEMS)}.{tld}"

    # -- unlabeled fillers
    def amount(self) -> str:
        rng = self.rng
        v = rng.randint(5, 250000) / rng.choice([1, 100])
        fmt = rng.choice(["€{:,.2f}", "USD {:,.2f}", "£{:,.2f}", "R {:,.2f}", "TRY {:,.2f}", "AED {:,.2f}"])
        whole = rng.choice(["KES {:,}", "₦{:,}", "¥{:,}", "INR {:,}", "IDR {:,}"])
        return whole.format(int(v) * 10) if rng.random() < 0.3 else fmt.format(v)

    def date(self) -> str:
        rng = self.rng
        d, m, y = rng.randint(1, 28), rng.randint(1, 12), rng.choice([2024, 2025, 2026])
        return rng.choice(
            [
                f"{d} {_MONTHS[m - 1]} {y}",
                f"{_MONTHS[m - 1]} {d}, {y}",
                f"{y}-{m:02d}-{d:02d}",
                f"{d:02d}/{m:02d}/{y}",
                f"{d:02d}.{m:02d}.{y}",
                f"{d} {_MONTHS[m - 1][:3]}",
            ]
        )


# ---------------------------------------------------------------------------- person forms


def _initial(token: str) -> str:
    for c in token:
        if unicodedata.category(c) in ("Lu", "Ll"):
            return c.upper()
    return token[:1]


def _initials(given: str, rng: random.Random) -> str:
    tokens = given.split()
    parts = ["-".join(_initial(t) + "." for t in tok.split("-")) for tok in tokens]
    style = rng.random()
    if style < 0.5:
        return " ".join(parts)
    if style < 0.75:
        return "".join(parts)
    return _initial(tokens[0])


def _casing(text: str, case: str) -> str:
    return text.upper() if case == "U" else text.lower() if case == "L" else text


@dataclass
class Mention:
    """What a PERSON gold span holds, for slicing results (not part of Sample)."""

    culture: str
    group: str
    form: str
    case: str


class _Namer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def title(self, p: Person, full: bool) -> str:
        rng = self.rng
        options = list(_TITLES[p.gender])
        if full:
            if p.culture in _KNIGHTED:
                options += _FULL_ONLY_TITLES[p.gender]
            extra = _CULTURE_TITLES.get(p.culture, {}).get(p.gender, [])
            options += extra * 3  # a culture's own titles show up often where they exist
        return rng.choice(options)

    def post(self, p: Person) -> str:
        rng = self.rng
        if p.culture in _US_STYLE and rng.random() < 0.45:
            pn = rng.choice([*_POST_GENERATIONAL, "Esq."])
            return f"{p.full}, {pn}" if rng.random() < 0.4 else f"{p.full} {pn}"
        pn = rng.choice(_POST_PROFESSIONAL)
        return f"{p.full}, {pn}" if rng.random() < 0.7 else f"{p.full} {pn}"

    def last(self, p: Person) -> str:
        return p.family or p.call

    def init(self, p: Person) -> str:
        if not p.family or p.family_first:
            return p.full
        if p.init_family:
            return f"{_initial(p.family)}. {p.given}"
        return f"{_initials(p.given, self.rng)} {p.family}"

    def rev(self, p: Person) -> str:
        if not p.family:
            return p.full
        if p.family_first:
            return f"{p.family.upper()} {p.given}"
        fam = p.family.upper() if self.rng.random() < 0.3 else p.family
        return f"{fam}, {p.given}"

    def tlast(self, p: Person) -> str:
        return f"{self.title(p, full=False)} {self.last(p)}"

    def hon(self, p: Person) -> tuple[str, str]:
        spec = _HONORIFICS.get(p.culture)
        if spec is None or p.gender == "x":
            return self.tlast(p), "title+last"
        male, female, where, part = spec
        word = male if p.gender == "m" else female
        target = {"call": p.call, "full": p.full, "family": self.last(p)}[part]
        if where == "suffix":
            return f"{target}{word}", "honorific"
        if where == "post":
            return f"{target} {word}", "honorific"
        return f"{word} {target}", "honorific"

    def render(self, kind: str, p: Person) -> tuple[str, str]:
        """(text, form) for a person slot kind."""
        rng = self.rng
        if kind == "NAME":
            kind = rng.choices(
                ["FULL", "TFULL", "POST", "TPOST", "INIT", "HON", "FIRST", "REV"], [40, 12, 12, 5, 15, 8, 4, 4]
            )[0]
        if kind == "SIG":
            kind = rng.choices(["FULL", "POST", "INIT", "FIRST"], [55, 22, 15, 8])[0]
        if kind == "FULL":
            return p.full, "full"
        if kind == "FIRST":
            return p.call, "first"
        if kind == "LAST":
            return self.last(p), "last"
        if kind == "TFULL":
            return f"{self.title(p, full=True)} {p.full}", "title+full"
        if kind == "TLAST":
            return self.tlast(p), "title+last"
        if kind == "TPOST":
            title = self.title(p, full=True)
            return f"{title} {self.post(p)}", "title+full+post"
        if kind == "POST":
            return self.post(p), "full+post"
        if kind == "INIT":
            return self.init(p), "initials"
        if kind == "REV":
            return self.rev(p), "surname,given"
        if kind == "HON":
            return self.hon(p)
        raise ValueError(kind)


_PERSON_KINDS = {"FULL", "FIRST", "LAST", "NAME", "TFULL", "TLAST", "INIT", "REV", "SIG", "HON", "POST", "TPOST"}
_TRAP_SLOTS = {
    "ORG",
    "PRODUCT",
    "DAY",
    "MONTH",
    "DEPT",
    "ROLE",
    "LANG",
    "HOLIDAY",
    "CITY",
    "COUNTRY",
    "CAPCITY",
    "CAPCOUNTRY",
    "STREET",
    "AIRPORT",
}
# How often chat writers drop capitals, per slot kind (lowercase, upper case).
_CHAT_CASE = {"FIRST": (0.25, 0.03), "FULL": (0.12, 0.03), "LAST": (0.10, 0.02)}

_SLOT = re.compile(r"\{([A-Z0-9]+)(?::(\d+))?\}")


# ---------------------------------------------------------------------------- templates


@dataclass
class Template:
    section: str
    text: str
    literal_trap: bool


def load_templates(path: Path | None = None) -> list[Template]:
    out: list[Template] = []
    section = ""
    for raw in (path or DATA / "templates.txt").read_text(encoding="utf-8").splitlines():
        line = raw.rstrip()
        if not line or line.startswith("# ") or line == "#":
            continue
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        trap = line.startswith("!")
        out.append(Template(section, line[1:] if trap else line, trap))
    return out


def _split_kind(name: str) -> tuple[str, str]:
    """'UFULL' -> ('FULL', 'U'); 'LAST' -> ('LAST', '')."""
    if name in _PERSON_KINDS:
        return name, ""
    if name[:1] in ("U", "L") and name[1:] in _PERSON_KINDS:
        return name[1:], name[0]
    return name, ""


@dataclass
class HeldoutItem:
    """A sample with what went into it: the template, whether it holds precision traps, the
    value inserted for each gold span (aligned with ``sample.spans``), and who each PERSON is."""

    sample: Sample
    template: str
    trap: bool
    inserted: list[str] = field(default_factory=list)
    mentions: list[tuple[GoldSpan, Mention]] = field(default_factory=list)
    phones: list[tuple[str, str]] = field(default_factory=list)  # (region, format) per PHONE_NUMBER span


def _fill(tpl: Template, maker: _Maker, namer: _Namer) -> HeldoutItem:
    rng = maker.rng
    persons: dict[str, Person] = {}
    taken: list[Person] = []
    memo: dict[tuple[str, str], str] = {}
    capital = rng.choice(_CAPITALS)
    out: list[str] = []
    spans: list[GoldSpan] = []
    inserted: list[str] = []
    phones: list[tuple[str, str]] = []
    phone_note: dict[tuple[str, str], tuple[str, str]] = {}
    mentions: list[tuple[GoldSpan, Mention]] = []
    pos = 0
    trap = tpl.literal_trap or tpl.section == "traps"
    text = tpl.text.replace("\\n", "\n")
    cursor = 0
    skip_dot = False

    def person(idx: str | None) -> Person:
        if idx is not None and idx in persons:
            return persons[idx]
        p = maker.draw(taken)
        taken.append(p)
        if idx is not None:
            persons[idx] = p
        return p

    def emit(value: str, etype: str) -> None:
        nonlocal pos
        if etype and value.startswith("the "):  # "the Netherlands": "the" is not part of the place
            out.append("the ")
            pos += 4
            value = value[4:]
        out.append(value)
        if etype:
            spans.append(GoldSpan(etype, pos, pos + len(value)))
            inserted.append(value)
        pos += len(value)

    for m in _SLOT.finditer(text):
        literal = text[cursor : m.start()]
        if skip_dot and literal.startswith("."):  # "Jr." ends the sentence: no second period
            literal = literal[1:]
        out.append(literal)
        pos += len(literal)
        cursor = m.end()
        name, idx = m.group(1), m.group(2)
        kind, case = _split_kind(name)
        if kind in _TRAP_SLOTS:
            trap = True
        if kind in _PERSON_KINDS:
            p = person(idx)
            value, form = namer.render(kind, p)
            if not case and tpl.section == "chat" and kind in _CHAT_CASE:
                low, up = _CHAT_CASE[kind]
                r = rng.random()
                case = "L" if r < low else "U" if r < low + up else ""
            value = _casing(value, case)
            emit(value, "PERSON")
            mentions.append((spans[-1], Mention(p.culture, p.group, form, case or "as written")))
            skip_dot = value.endswith(".")
            continue
        skip_dot = False
        key = (kind, idx or "")
        if idx is not None and key in memo:
            value = memo[key]
        elif kind == "EMAIL":
            value = maker.email_for(person(idx) if idx is not None else rng.choice(maker.people))
        else:
            value = _other(kind, maker, capital)
        if idx is not None:
            memo[key] = value
        emit(value, _OTHER_TYPES.get(kind, ""))
        if kind == "PHONE":
            phone_note.setdefault(key, maker.last_phone)
            phones.append(phone_note[key] if idx is not None else maker.last_phone)
    tail = text[cursor:]
    if skip_dot and tail.startswith("."):
        tail = tail[1:]
    out.append(tail)
    sample = Sample("".join(out), spans, tpl.section)
    return HeldoutItem(sample, tpl.text, trap, inserted, mentions, phones)


_OTHER_TYPES = {
    "EMAIL": "EMAIL_ADDRESS",
    "ROLEMAIL": "EMAIL_ADDRESS",
    "PHONE": "PHONE_NUMBER",
    "CARD": "CREDIT_CARD",
    "IBAN": "IBAN_CODE",
    "SSN": "US_SSN",
    "IP": "IP_ADDRESS",
    "IP4": "IP_ADDRESS",
    "IP6": "IP_ADDRESS",
    "CITY": "LOCATION",
    "COUNTRY": "LOCATION",
    "CAPCITY": "LOCATION",
    "CAPCOUNTRY": "LOCATION",
    "STREET": "LOCATION",
    "AIRPORT": "LOCATION",
}


def _other(kind: str, maker: _Maker, capital: tuple[str, str]) -> str:
    rng = maker.rng
    simple = {
        "CITY": _CITY_LIST,
        "COUNTRY": _COUNTRIES,
        "STREET": _STREETS,
        "AIRPORT": _AIRPORTS,
        "ORG": _ORGS,
        "PRODUCT": _PRODUCTS,
        "DAY": _DAYS,
        "MONTH": _MONTHS,
        "DEPT": _DEPTS,
        "ROLE": _ROLES,
        "LANG": _LANGS,
        "HOLIDAY": _HOLIDAYS,
    }
    if kind in simple:
        return rng.choice(simple[kind])
    makers = {
        "PHONE": maker.phone,
        "CARD": maker.card,
        "IBAN": maker.iban,
        "SSN": maker.ssn,
        "IP": maker.ip,
        "IP4": maker.ipv4,
        "IP6": maker.ipv6,
        "ROLEMAIL": maker.role_email,
        "AMOUNT": maker.amount,
        "DATE": maker.date,
    }
    if kind in makers:
        return makers[kind]()
    if kind == "CAPCOUNTRY":
        return capital[0]
    if kind == "CAPCITY":
        return capital[1]
    if kind == "TIME":
        return rng.choice([f"{rng.randint(7, 18)}:{rng.choice(['00', '15', '30', '45'])}", f"{rng.randint(1, 11)} pm"])
    if kind == "TICKET":
        return str(rng.randint(10000, 999999))
    if kind == "ORDER":
        return rng.choice(["SO-", "PO ", "INV-", "ORD"]) + str(rng.randint(10000, 99999))
    if kind == "NUM":
        return str(rng.randint(2, 4999))
    raise ValueError(f"unknown slot {kind}")


# ---------------------------------------------------------------------------- corpus


def build_heldout_items(seed: int = SEED) -> list[HeldoutItem]:
    """The corpus with per-sample details (template, trap flag, culture of each PERSON span)."""
    rng = random.Random(seed)
    people = load_names()
    templates = load_templates()
    maker, namer = _Maker(rng, people), _Namer(rng)
    items: list[HeldoutItem] = []
    for section, size in SECTION_SIZES.items():
        pool = [t for t in templates if t.section == section]
        order: list[Template] = []
        for _ in range(size):
            if not order:  # every template once per round, in a fresh order
                order = list(pool)
                rng.shuffle(order)
            items.append(_fill(order.pop(), maker, namer))
    return items


def build_heldout_corpus(seed: int = SEED) -> list[Sample]:
    """Deterministic for a given seed: the same texts and gold spans on every run, offline."""
    return [item.sample for item in build_heldout_items(seed)]


def check_spans(corpus: list[Sample]) -> list[str]:
    """Problems with gold spans: out of range, overlapping, whitespace at an edge, unknown type."""
    problems = []
    for i, s in enumerate(corpus):
        last_end = -1
        for g in sorted(s.spans, key=lambda g: g.start):
            value = s.text[g.start : g.end]
            if not (0 <= g.start < g.end <= len(s.text)):
                problems.append(f"#{i}: span {g} out of range")
            if g.start < last_end:
                problems.append(f"#{i}: span {g} overlaps the one before")
            if value != value.strip():
                problems.append(f"#{i}: span {g} has whitespace at an edge: {value!r}")
            if g.entity_type not in GOLD_TYPES:
                problems.append(f"#{i}: unknown type {g.entity_type}")
            last_end = max(last_end, g.end)
    return problems


def _valid_phone(value: str) -> bool:
    text = value.replace("(0)", "")
    if text.startswith("00"):
        text = "+" + text[2:]
    regions: list[str | None] = [None] if text.startswith("+") else list(PHONE_REGIONS)
    return any(phonenumbers.is_valid_number(phonenumbers.parse(text, r)) for r in regions)


def self_check(items: list[HeldoutItem], seed: int = SEED, rebuild: bool = True) -> list[str]:
    """Every gold span's text is the value inserted there; spans do not overlap; card, IBAN,
    phone and IP values are valid; a second build gives the same corpus (unless not ``rebuild``)."""
    problems = check_spans([it.sample for it in items])
    for i, it in enumerate(items):
        s = it.sample
        if len(it.inserted) != len(s.spans):
            problems.append(f"#{i}: {len(s.spans)} spans but {len(it.inserted)} inserted values")
        for g, value in zip(s.spans, it.inserted, strict=False):
            if s.text[g.start : g.end] != value:
                problems.append(f"#{i}: span {g} reads {s.text[g.start : g.end]!r}, inserted {value!r}")
            compact = re.sub(r"[ -]", "", value)
            if g.entity_type == "CREDIT_CARD" and not (compact.isdigit() and luhn_ok(compact)):
                problems.append(f"#{i}: card fails Luhn: {value}")
            if g.entity_type == "IBAN_CODE" and not iban_ok(value):
                problems.append(f"#{i}: IBAN check digits wrong: {value}")
            if g.entity_type == "PHONE_NUMBER" and not _valid_phone(value):
                problems.append(f"#{i}: phone number not valid: {value}")
            if g.entity_type == "IP_ADDRESS":
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    problems.append(f"#{i}: not an IP address: {value}")
    again = build_heldout_corpus(seed) if rebuild else [i.sample for i in items]
    if [(s.text, s.spans, s.source) for s in again] != [
        (i.sample.text, i.sample.spans, i.sample.source) for i in items
    ]:
        problems.append("not deterministic: a second build differs")
    return problems


def main() -> None:
    items = build_heldout_items()
    corpus = [it.sample for it in items]
    people = load_names()
    templates = load_templates()

    problems = self_check(items)
    print(f"{len(corpus)} texts from {len(templates)} templates; self-check: {'ok' if not problems else 'FAILED'}")
    for p in problems[:20]:
        print("  ", p)

    counts = Counter(g.entity_type for s in corpus for g in s.spans)
    print("\ngold spans per type:")
    for t in GOLD_TYPES:
        print(f"  {t:15s} {counts[t]:5d}")
    print("\ntexts per section (templates):")
    for section in SECTION_SIZES:
        n_t = sum(t.section == section for t in templates)
        n = sum(s.source == section for s in corpus)
        print(f"  {section:12s} {n:5d} ({n_t})")
    regions = Counter(region for it in items for region, _ in it.phones)
    styles = Counter(style for it in items for _, style in it.phones)
    print(f"\nphone numbers by country ({len(regions)} countries): {dict(sorted(regions.items()))}")
    print(f"phone number formats: {dict(styles.most_common())}")
    traps = sum(it.trap for it in items)
    no_gold = sum(not s.spans for s in corpus)
    share = f"{traps / len(corpus):.0%}"
    print(f"\ntexts with capitalized non-person words (traps): {traps} ({share}); no gold at all: {no_gold}")

    cultures = Counter(p.culture for p in people)
    groups_names = Counter(p.group for p in people)
    mentions = [m for it in items for _, m in it.mentions]
    group_mentions = Counter(m.group for m in mentions)
    distinct_full = len({p.full for p in people})
    drawn = {(it.sample.text[g.start : g.end]) for it in items for g, _ in it.mentions}
    print(f"\nnames: {len(people)} entries, {distinct_full} distinct full names, {len(cultures)} cultures;")
    n_used = len(
        {(m.culture, it.sample.text[g.start : g.end]) for it in items for g, m in it.mentions if m.form == "full"}
    )
    print(f"  PERSON spans {len(mentions)}, distinct surface forms {len(drawn)}, full names used {n_used}")
    print(f"  {'group':26s} {'cultures':>8s} {'names':>6s} {'spans':>6s}")
    for group, n in groups_names.most_common():
        n_c = len({p.culture for p in people if p.group == group})
        print(f"  {group:26s} {n_c:8d} {n:6d} {group_mentions[group]:6d}")
    print("  forms:", dict(Counter(m.form for m in mentions).most_common()))
    print("  casing:", dict(Counter(m.case for m in mentions).most_common()))

    rng = random.Random(1)
    print()
    for it in rng.sample(items, 8):
        s = it.sample
        print("---", s.source)
        print(s.text)
        print("   ", [(g.entity_type, s.text[g.start : g.end]) for g in s.spans])
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
