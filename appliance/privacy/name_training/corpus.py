"""Labelled training examples: frames filled with names and look-alikes, then reshaped.

Each example is a text and the character spans of every person in it. Texts are joined
(two or three frames make a message), lower-cased as chats are, or upper-cased as forms
are, so that casing alone never decides. Deterministic for a seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from appliance.privacy.name_training.frames import NO_PERSON_FRAMES, PERSON_FRAMES
from appliance.privacy.name_training.people import NamePool, build_pool, make_person

_SLOT = re.compile(r"\{([A-Z]+)\}")

_BRANDS = (
    "Apple", "Google", "Microsoft", "Amazon", "Toyota", "Siemens", "Safaricom", "Samsung", "Nestlé", "Unilever",
    "Tesla", "Ford", "Honda", "Nokia", "Ericsson", "Philips", "Bosch", "Airbus", "Boeing", "Shell", "Total",
    "Vodafone", "Orange", "Telkom", "MTN", "Jumia", "Flipkart", "Infosys", "Tata", "Wipro", "Alibaba", "Tencent",
    "Baidu", "Huawei", "Xiaomi", "Sony", "Nintendo", "Canon", "Panasonic", "Hyundai", "Kia", "Lenovo", "Dell",
    "Oracle", "SAP", "Salesforce", "Adobe", "Zoom", "Slack", "Stripe", "PayPal", "Visa", "Mastercard", "Revolut",
    "Spotify", "Netflix", "Uber", "Lyft", "Grab", "Gojek", "Airbnb", "Booking.com", "IKEA", "Lidl", "Aldi",
    "Carrefour", "Walmart", "Target", "Zara", "H&M", "Adidas", "Nike", "Puma", "Heineken", "Coca-Cola", "Pepsi",
    "Emirates", "Lufthansa", "KLM", "Qantas", "Ethiopian Airlines", "Deutsche Bank", "Barclays", "HSBC",
    "Santander", "ING", "Rabobank", "Equity Bank", "Ecobank", "Standard Bank", "Petrobras", "Embraer", "Mercado Libre",
)  # fmt: skip
_PRODUCTS = (
    "iPhone", "iPad", "MacBook", "Excel", "Outlook", "Teams", "SharePoint", "Jira", "Confluence", "Salesforce CRM",
    "Windows 11", "Android", "Chrome", "Firefox", "Kubernetes", "Postgres", "Oracle DB", "SAP HANA", "Office 365",
    "Galaxy S24", "Pixel 8", "ThinkPad", "Kindle", "Alexa", "Siri", "Copilot", "Dropbox", "OneDrive", "Zoom Rooms",
    "Photoshop", "Acrobat", "Tableau", "Power BI", "QuickBooks", "Xero", "Workday", "ServiceNow", "Zendesk", "M-Pesa",
    "WhatsApp", "Telegram", "Signal", "Skype", "Webex", "GitHub", "GitLab", "Jenkins", "Terraform", "Ansible",
)  # fmt: skip
# Companies and brands named after people: the name is a company here, not a person.
_FOUNDERS = (
    "Ferrari", "Porsche", "Lamborghini", "Dell", "Disney", "Boeing", "Ford", "Chanel", "Dior", "Gucci", "Prada",
    "Armani", "Hilton", "Marriott", "McDonald's", "Kellogg's", "Heinz", "Cadbury", "Mercedes", "Citroën",
    "Peugeot", "Renault", "Michelin", "Siemens", "Bosch", "Philips", "Mahindra", "Godrej", "Birla", "Dangote",
    "Toyota", "Honda", "Suzuki", "Yamaha", "Mitsubishi", "Hyundai", "Tata", "Adani", "Reliance", "Carlsberg",
    "Guinness", "Heineken", "Barilla", "Lavazza", "Benetton", "Louis Vuitton", "Hermès", "Cartier", "Rolex",
    "Bugatti", "Maserati", "Kia", "Škoda", "Nestlé", "Mars", "Hershey", "Wrigley", "Levi's", "Adidas",
)  # fmt: skip
_CITIES = (
    "Paris", "Lyon", "London", "Berlin", "Madrid", "Lisbon", "Rome", "Milan", "Vienna", "Zurich", "Geneva",
    "Amsterdam", "Brussels", "Warsaw", "Prague", "Budapest", "Athens", "Istanbul", "Ankara", "Cairo", "Lagos",
    "Abuja", "Accra", "Nairobi", "Kampala", "Kigali", "Addis Ababa", "Dar es Salaam", "Johannesburg", "Cape Town",
    "Durban", "Casablanca", "Tunis", "Algiers", "Dakar", "Abidjan", "Kinshasa", "Luanda", "Harare", "Lusaka",
    "Dubai", "Abu Dhabi", "Doha", "Riyadh", "Jeddah", "Tehran", "Karachi", "Lahore", "Islamabad", "Delhi",
    "Mumbai", "Bangalore", "Chennai", "Hyderabad", "Kolkata", "Dhaka", "Colombo", "Kathmandu", "Bangkok",
    "Hanoi", "Ho Chi Minh City", "Jakarta", "Surabaya", "Manila", "Cebu", "Kuala Lumpur", "Singapore",
    "Hong Kong", "Shanghai", "Beijing", "Shenzhen", "Taipei", "Seoul", "Busan", "Tokyo", "Osaka", "Sydney",
    "Melbourne", "Auckland", "Wellington", "Toronto", "Montreal", "Vancouver", "New York", "Chicago", "Houston",
    "Austin", "Denver", "Seattle", "Boston", "Atlanta", "Miami", "Mexico City", "Guadalajara", "Bogotá", "Lima",
    "Quito", "Santiago", "Buenos Aires", "São Paulo", "Rio de Janeiro", "Montevideo", "Reykjavik", "Oslo",
    "Stockholm", "Helsinki", "Copenhagen", "Tallinn", "Riga", "Vilnius", "Kyiv", "Tbilisi", "Yerevan", "Baku",
    "Almaty", "Tashkent", "Ulaanbaatar", "Florence", "Victoria", "Charlotte", "Adelaide", "Sofia", "Regina",
    "Austin", "Jackson", "Lincoln", "Madison", "Eugene", "Marion", "Florence", "Beatrice", "Elizabeth",
)  # fmt: skip
_DEPTS = (
    "Finance", "HR", "Human Resources", "Legal", "Procurement", "IT", "Security", "Sales", "Marketing", "Support",
    "Customer Success", "Engineering", "Operations", "Logistics", "Compliance", "Risk", "Payroll", "Facilities",
)  # fmt: skip
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "tomorrow", "today")
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip
_LANGS = ("French", "Swahili", "Arabic", "Spanish", "Portuguese", "German", "Hindi", "Mandarin", "Zulu", "Turkish")
_NATS = ("French", "Kenyan", "Nigerian", "German", "Brazilian", "Indian", "Japanese", "Turkish", "Mexican", "Thai")
# it_IT is left out: its city names come out in a different order in every process.
_FAKER_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "pl_PL", "nl_NL", "pt_BR", "en_IN", "en_AU")


@dataclass(frozen=True)
class Example:
    text: str
    spans: tuple[tuple[int, int], ...]


class _Values:
    """Look-alike values for the non-person slots."""

    def __init__(self, rng: random.Random, seed: int) -> None:
        from faker import Faker

        self.rng = rng
        self.fakers: list[Any] = []
        for i, locale in enumerate(_FAKER_LOCALES):
            f = Faker(locale)
            f.seed_instance(seed + i)
            self.fakers.append(f)

    def faker(self) -> Any:
        return self.rng.choice(self.fakers)

    def date(self) -> str:
        """From the seeded generator, not Faker's dates, which count back from today."""
        rng = self.rng
        year, month, day = rng.randint(2015, 2027), rng.randint(1, 12), rng.randint(1, 28)
        return rng.choice(
            [f"{day} {_MONTHS[month - 1]} {year}", f"{year}-{month:02d}-{day:02d}", f"{day:02d}/{month:02d}/{year}",
             f"{_MONTHS[month - 1]} {day}"]
        )  # fmt: skip

    def make(self, slot: str) -> str:
        rng = self.rng
        makers: dict[str, Callable[[], str]] = {
            "CITY": lambda: rng.choice(_CITIES) if rng.random() < 0.6 else str(self.faker().city()),
            "COUNTRY": lambda: str(self.faker().country()),
            "ORG": lambda: rng.choice([str(self.faker().company()), rng.choice(_BRANDS), rng.choice(_FOUNDERS)]),
            "BRAND": lambda: rng.choice(_BRANDS),
            "FOUNDER": lambda: rng.choice(_FOUNDERS),
            "PROD": lambda: rng.choice(_PRODUCTS),
            "STREET": lambda: str(self.faker().street_address()).replace("\n", ", "),
            "DAY": lambda: rng.choice(_DAYS),
            "MONTH": lambda: rng.choice(_MONTHS),
            "DATE": self.date,
            "TIME": lambda: f"{rng.randint(7, 18)}:{rng.choice(['00', '15', '30', '45'])}",
            "PHONE": lambda: str(self.faker().phone_number()),
            "EMAIL": lambda: str(self.faker().email()),
            "NUM": lambda: str(rng.randint(2, 99999)),
            "AMT": lambda: rng.choice(["$", "EUR ", "£", "KES ", "R", "₦"]) + f"{rng.randint(10, 90000):,}",
            "JOB": lambda: str(self.faker().job()) if rng.random() < 0.7 else rng.choice(_DEPTS) + " lead",
            "DEPT": lambda: rng.choice(_DEPTS),
            "LANG": lambda: rng.choice(_LANGS),
            "NAT": lambda: rng.choice(_NATS),
        }
        return makers[slot]()


def _email_of(given: str, family: str, rng: random.Random) -> str | None:
    from anyascii import anyascii

    g = re.sub(r"[^a-z]", "", anyascii(given.split()[0]).lower())
    f = re.sub(r"[^a-z]", "", anyascii(family.split()[-1]).lower())
    if not g or not f:
        return None
    local = rng.choice([f"{g}.{f}", f"{g[0]}{f}", f"{g}{f[0]}", f"{g}_{f}", f"{f}.{g}"])
    return f"{local}@{rng.choice(['example.com', 'corp.example', 'mail.example.org', 'firm.example.net'])}"


def _fill(frame: str, pool: NamePool, values: _Values, rng: random.Random) -> Example:
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = cursor = 0
    last_person = None
    for m in _SLOT.finditer(frame):
        literal = frame[cursor : m.start()]
        out.append(literal)
        pos += len(literal)
        slot = m.group(1)
        if slot in ("P", "G"):
            person = make_person(pool, rng)
            value = person.given.split()[0] if slot == "G" else person.text
            if slot == "G" and rng.random() < 0.15:
                value = pool.invent(rng)
            last_person = person
            spans.append((pos, pos + len(value)))
        elif slot == "EMAIL" and last_person is not None and rng.random() < 0.5:
            value = _email_of(last_person.given, last_person.family, rng) or values.make(slot)
        else:
            value = values.make(slot)
        out.append(value)
        pos += len(value)
        cursor = m.end()
    out.append(frame[cursor:])
    return Example("".join(out), tuple(spans))


def _join(parts: list[Example], rng: random.Random) -> Example:
    text = ""
    spans: list[tuple[int, int]] = []
    for i, part in enumerate(parts):
        if i:
            text += rng.choice([" ", " ", "\n", "\n\n", ". ", " - "])
        spans += [(s + len(text), e + len(text)) for s, e in part.spans]
        text += part.text
    return Example(text, tuple(spans))


def examples(n: int, seed: int = 1, pool: NamePool | None = None) -> Iterator[Example]:
    """``n`` labelled examples; about a quarter hold no person at all."""
    rng = random.Random(seed)  # noqa: S311  reproducible synthetic data, not secrets
    pool = pool if pool is not None else build_pool(seed=seed)
    values = _Values(rng, seed)
    for _ in range(n):
        k = 1 if rng.random() < 0.7 else rng.choice([2, 2, 3])
        parts = [
            _fill(rng.choice(PERSON_FRAMES if rng.random() < 0.7 else NO_PERSON_FRAMES), pool, values, rng)
            for _ in range(k)
        ]
        ex = _join(parts, rng)
        r = rng.random()
        recased = ex.text.lower() if r < 0.14 else ex.text.upper() if r < 0.17 else ex.text
        if len(recased) == len(ex.text):  # "İ".lower() and "ß".upper() change lengths
            ex = Example(recased, ex.spans)
        if rng.random() < 0.1:
            ex = Example(ex.text.rstrip(".!?"), ex.spans)
        yield ex
