"""Seeded, labeled PII evaluation corpus (offline).

Two sources, mixed:
- presidio-evaluator's ``PresidioSentenceFaker`` (its 209 templates and offline data
  files). Its hospital provider queries WikiData when built; we hand it a subclass that
  uses the provider's own fallback list instead, so nothing leaves the machine.
- our own chat and support-ticket templates, with values in the formats people really
  type: phone numbers valid for their country in national, international and E.164
  form; Luhn-valid card numbers grouped by spaces or dashes; IBANs with valid check
  digits, compact or in groups of four; SSNs; IPv4 and IPv6; names in chat casing.

Usage: ``python -m bench.pii_corpus [N]`` prints a few samples and per-type counts.
"""

from __future__ import annotations

import bisect
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import phonenumbers
from faker import Faker

SEED = 20240611

# presidio-evaluator labels -> what the appliance reports. Types not listed keep their label
# and are not scored (STREET_ADDRESS, TITLE, AGE, ...): presidio has no detector for them.
LABEL_MAP = {"GPE": "LOCATION", "LOCATION": "LOCATION"}


@dataclass(frozen=True)
class GoldSpan:
    entity_type: str
    start: int
    end: int


@dataclass
class Sample:
    text: str
    spans: list[GoldSpan] = field(default_factory=list)
    source: str = ""


# ---------------------------------------------------------------------------- presidio-evaluator


def _presidio_samples(n: int, seed: int) -> list[Sample]:
    import contextlib
    import io

    from presidio_evaluator.data_generator import PresidioSentenceFaker
    from presidio_evaluator.data_generator import presidio_sentence_faker as psf
    from presidio_evaluator.data_generator.faker_extensions import HospitalProvider

    class OfflineHospitalProvider(HospitalProvider):  # type: ignore[misc]
        """The stock provider asks WikiData for US hospitals; use its built-in list instead."""

        def load_hospitals(self, hospital_file: str | None) -> list[str]:
            return list(self.default_list)

    providers = [
        OfflineHospitalProvider if p is HospitalProvider else p for p in psf.presidio_additional_entity_providers
    ]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        faker = PresidioSentenceFaker("en_US", lower_case_ratio=0.05, entity_providers=providers, random_seed=seed)
        generated = faker.generate_new_fake_sentences(n)
    out = []
    for s in generated:
        text, shift = _real_newlines(s.full_text)
        spans = [
            GoldSpan(LABEL_MAP.get(sp.entity_type, sp.entity_type), shift(sp.start_position), shift(sp.end_position))
            for sp in s.spans
        ]
        out.append(Sample(text, spans, "presidio-evaluator"))
    return out


def _real_newlines(text: str) -> tuple[str, Callable[[int], int]]:
    """Some templates spell line breaks as a literal backslash-n; make them real ones
    (the templates' intent: addresses and signatures on several lines) and map offsets."""
    marks = [m.start() for m in re.finditer(r"\\n", text)]

    def shift(pos: int) -> int:
        return pos - bisect.bisect_left(marks, pos)

    return text.replace("\\n", "\n"), shift


# ---------------------------------------------------------------------------- our own templates

_CHAT = [
    "hey, it's {FIRST} here. can you call me back on {PHONE}?",
    "Hi team, my email changed to {EMAIL}, please update my account.",
    "pls send the invoice to {EMAIL} thx",
    "My number is {PHONE}, text me when the parcel arrives in {CITY}.",
    "Hi, I'm {NAME} from {CITY}. The card ending in my wallet is {CARD}.",
    "Refund to IBAN {IBAN} please, account holder {NAME}.",
    "ok so the server at {IP} keeps dropping connections since this morning",
    "Can you whitelist {IP}? It's our office gateway in {CITY}.",
    "I already gave my SSN {SSN} to your colleague {NAME} last week.",
    "{NAME} said I should reach out. You can reach me at {PHONE} or {EMAIL}.",
    "Moving to {COUNTRY} next month, how do I change my billing address?",
    "thanks {FIRST}! see you in {CITY} on friday",
    "Please charge {CARD} for the annual plan.",
    "wire it to {IBAN}, reference {NAME}",
    "Ping me on {PHONE} if the login from {IP} was not you.",
    "My colleague {NAME} ({EMAIL}) will take over the ticket.",
    "Is it safe to send my social security number {SSN} over chat?",
    "The payment from card {CARD} failed twice, can you check?",
    "I live in {CITY}, {COUNTRY} and my phone is {PHONE}",
    "cc {EMAIL} on the reply please",
]

_TICKET = [
    "Ticket #{TICKET}\nCustomer: {NAME}\nEmail: {EMAIL}\nPhone: {PHONE}\nIssue: cannot log in since the update.",
    "Subject: refund request\n\nDear support,\nplease refund the last charge on {CARD}.\nRegards,\n{NAME}",
    "Reporter: {NAME} <{EMAIL}>\nAffected host: {IP}\nSummary: VPN drops every 10 minutes.",
    "Customer {NAME} called from {PHONE} about a duplicate debit to {IBAN}.",
    "Account owner: {NAME}\nSSN: {SSN}\nAddress city: {CITY}\nRequest: close account.",
    "Escalation: {NAME} in {CITY} reports fraud on card {CARD}; callback {PHONE}.",
    "Bank details for payout\nName: {NAME}\nIBAN: {IBAN}\nEmail for receipts: {EMAIL}",
    "Login alert for {EMAIL}: new sign-in from {IP} ({COUNTRY}).",
    "Hello,\n\nThis is {NAME}. My new mobile number is {PHONE}.\n\nBest,\n{FIRST}",
    "Please verify identity: SSN {SSN}, DOB on file, phone {PHONE}.",
]

_PHONE_REGIONS = ["US", "GB", "DE", "FR", "IN", "CH", "NL", "ES", "IT", "AU", "CA", "BR", "SE", "IE"]
_NATIONAL_OK = {"US", "GB", "DE", "FR", "IN", "CA"}  # national format is only unambiguous at home
_IBAN_LOCALES = ["de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT", "en_GB", "pl_PL", "pt_PT", "de_AT", "fr_CH"]


def _valid_phone(rng: random.Random, region: str) -> phonenumbers.PhoneNumber:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    if rng.random() < 0.5:
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.FIXED_LINE) or example
    digits = str(example.national_number)
    for _ in range(200):  # keep the prefix, randomize the tail, until it is a valid number
        keep = max(2, len(digits) - 5)
        candidate = digits[:keep] + "".join(rng.choice("0123456789") for _ in range(len(digits) - keep))
        num = phonenumbers.parse("+" + str(example.country_code) + candidate)
        if phonenumbers.is_valid_number(num):
            return num
    return example


def _phone(rng: random.Random) -> str:
    region = rng.choice(_PHONE_REGIONS)
    num = _valid_phone(rng, region)
    fmt = rng.random()
    if region in _NATIONAL_OK and fmt < 0.4:
        text = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
        if region == "US" and rng.random() < 0.4:
            d = str(num.national_number)
            text = rng.choice([f"{d[:3]}.{d[3:6]}.{d[6:]}", f"{d[:3]}-{d[3:6]}-{d[6:]}", f"{d[:3]} {d[3:6]} {d[6:]}"])
        return text
    if fmt < 0.75:
        return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    if fmt < 0.9:
        return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    intl = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return "00" + intl[1:] if rng.random() < 0.5 else intl.replace(" ", "-")


def _card(fake: Faker, rng: random.Random) -> str:
    number = fake.credit_card_number(card_type=rng.choice(["visa16", "mastercard", "amex", "discover"]))
    style = rng.random()
    if style < 0.4:
        return number
    sep = " " if style < 0.8 else "-"
    if len(number) == 15:  # amex 4-6-5
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def _iban(rng: random.Random) -> str:
    iban = Faker(rng.choice(_IBAN_LOCALES)).iban()
    if rng.random() < 0.5:
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return str(iban)


def _ssn(fake: Faker, rng: random.Random) -> str:
    ssn = str(fake.ssn())
    return ssn if rng.random() < 0.8 else ssn.replace("-", " ")


def _ip(fake: Faker, rng: random.Random) -> str:
    return str(fake.ipv4_public() if rng.random() < 0.8 else fake.ipv6())


def _name(fake: Faker, rng: random.Random, chat: bool) -> str:
    name = f"{fake.first_name()} {fake.last_name()}"
    if chat and rng.random() < 0.1:
        name = name.lower()  # people type names in lowercase in chats; NER finds few of these
    return name


_SLOT = re.compile(r"\{([A-Z]+)\}")


def _fill(template: str, fake: Faker, rng: random.Random, chat: bool) -> Sample:
    values = {
        "EMAIL": ("EMAIL_ADDRESS", lambda: fake.email() if rng.random() < 0.8 else fake.company_email()),
        "PHONE": ("PHONE_NUMBER", lambda: _phone(rng)),
        "CARD": ("CREDIT_CARD", lambda: _card(fake, rng)),
        "IBAN": ("IBAN_CODE", lambda: _iban(rng)),
        "SSN": ("US_SSN", lambda: _ssn(fake, rng)),
        "IP": ("IP_ADDRESS", lambda: _ip(fake, rng)),
        "NAME": ("PERSON", lambda: _name(fake, rng, chat)),
        "FIRST": ("PERSON", lambda: fake.first_name().lower() if chat and rng.random() < 0.3 else fake.first_name()),
        "CITY": ("LOCATION", lambda: fake.city()),
        "COUNTRY": ("LOCATION", lambda: fake.country()),
        "TICKET": ("", lambda: str(rng.randint(10000, 99999))),
    }
    out: list[str] = []
    spans: list[GoldSpan] = []
    pos = 0
    cursor = 0
    for m in _SLOT.finditer(template):
        literal = template[cursor : m.start()]
        out.append(literal)
        pos += len(literal)
        entity_type, make = values[m.group(1)]
        value = make()
        out.append(value)
        if entity_type:
            spans.append(GoldSpan(entity_type, pos, pos + len(value)))
        pos += len(value)
        cursor = m.end()
    out.append(template[cursor:])
    return Sample("".join(out), spans, "chat" if chat else "ticket")


def _own_samples(n: int, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    samples = []
    for i in range(n):
        chat = i % 3 != 0
        template = rng.choice(_CHAT if chat else _TICKET)
        samples.append(_fill(template, fake, rng, chat))
    return samples


def build_corpus(n_presidio: int = 1400, n_own: int = 900, seed: int = SEED) -> list[Sample]:
    """Deterministic for a given seed: the same texts and labels on every run."""
    return _presidio_samples(n_presidio, seed) + _own_samples(n_own, seed)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2300
    corpus = build_corpus(n_presidio=n * 14 // 23, n_own=n - n * 14 // 23)
    counts = Counter(s.entity_type for sample in corpus for s in sample.spans)
    print(f"{len(corpus)} sentences; gold spans per type:")
    for t, c in counts.most_common():
        print(f"  {t:20s} {c}")
    for sample in corpus[:: max(1, len(corpus) // 8)]:
        print("---", sample.source)
        print(sample.text)
        print([(s.entity_type, sample.text[s.start : s.end]) for s in sample.spans])


if __name__ == "__main__":
    main()
