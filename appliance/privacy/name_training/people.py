"""Names for the training corpus, and the many ways people write them.

Breadth matters more than any one list: names come from dozens of Faker locales (Latin
scripts as they are, Cyrillic, Greek and Armenian transliterated, Japanese, Chinese and
Korean through their romanizations), are mixed across cultures, and one in eight is
invented from the letter statistics of the rest, so the model learns what a name looks
like and where it sits in a sentence rather than memorizing a list. Some locales are held
out of training altogether so that recall can be measured on names of cultures the model
never saw (``HELD_OUT_LOCALES``).

The rendered span covers everything a reader would call the name: titles before it
("Dr.", "Sheikh") and post-nominals after it ("PhD", "Jr."), so a replacement never
leaves part of a person behind.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Latin-script locales used as they are (Faker falls back to en_US names for several other
# locale codes; those are left out to avoid weighting English names even more).
_LATIN = (
    "en_US", "en_GB", "en_IE", "en_AU", "en_NZ", "en_CA", "en_IN", "en_KE", "en_NG", "en_PK", "en_TH",
    "de_DE", "de_AT", "de_CH", "fr_FR", "fr_CA", "fr_CH", "fr_DZ", "fr_BE", "es_ES", "es_MX", "es_AR",
    "es_CO", "es_CL", "it_IT", "pt_PT", "pt_BR", "nl_NL", "nl_BE", "sv_SE", "da_DK", "no_NO", "pl_PL",
    "cs_CZ", "sk_SK", "sl_SI", "hr_HR", "ro_RO", "lt_LT", "lv_LV", "et_EE", "tr_TR", "az_AZ", "uz_UZ",
    "id_ID", "vi_VN", "zu_ZA", "yo_NG", "ha_NG", "sw", "ga_IE",
)  # fmt: skip
_TRANSLITERATED = ("ru_RU", "uk_UA", "bg_BG", "mk_MK", "el_GR", "hy_AM")
_ROMANIZED = ("ja_JP", "zh_CN", "ko_KR")
HELD_OUT_LOCALES = ("fi_FI", "hu_HU", "ig_NG", "is_IS", "ka_GE", "tw_GH")
"""Never used for training: the bench draws names from these to test unseen cultures."""

_FAMILY_FIRST = frozenset({"ja_JP", "zh_CN", "ko_KR", "hu_HU", "vi_VN"})

TITLES = (
    "Mr", "Mr.", "Mrs", "Mrs.", "Ms", "Ms.", "Mx", "Miss", "Dr", "Dr.", "Prof.", "Prof", "Professor",
    "Sir", "Dame", "Lady", "Lord", "Rev.", "Fr.", "Sister", "Brother", "Herr", "Frau", "Mme", "Mme.",
    "Mlle", "M.", "Señor", "Señora", "Sra.", "Sr.", "Dña.", "Don", "Sheikh", "Chief", "Alhaji", "Hajia",
    "Pastor", "Imam", "Rabbi", "Judge", "Justice", "Capt.", "Col.", "Sgt.", "Lt.", "Gen.", "Hon.",
    "Eng.", "Ing.", "Dipl.-Ing.", "Mag.", "Mevrouw", "Meneer", "Pani", "Pan", "Sayın", "Bapak", "Ibu",  # noqa: RUF001
    "Mwalimu", "Nana", "Oga", "Shri", "Smt.", "Sri", "Ustaz", "Mallam", "Madam",
    "Dato'", "Tan Sri",
)  # fmt: skip
POST_NOMINALS = (
    "Jr.", "Jr", "Sr.", "II", "III", "IV", "PhD", "Ph.D.", "MD", "M.D.", "MBA", "Esq.", "CPA", "RN",
    "DDS", "B.Eng.", "M.Eng.", "BSc", "MSc", "B.A.", "M.A.", "LLB", "LL.M.", "FRCS", "OBE", "MBE", "CBE",
    "PE", "PMP", "CFA", "S.H.", "S.Kom", "S.E.", "M.Sc.", "Dipl.-Kfm.", "FCA", "ACCA", "DPhil", "JD",
)  # fmt: skip
_PARTICLES: dict[str, tuple[str, ...]] = {
    "nl": ("van", "van der", "van den", "de", "van de", "ter", "ten", "van 't"),
    "de": ("von", "von der", "zu", "vom"),
    "fr": ("de", "du", "de la", "Le", "La", "d'"),
    "it": ("di", "De", "Di", "Lo", "della", "D'"),
    "es": ("de", "de la", "del", "de los", "y"),
    "pt": ("da", "dos", "das", "de"),
    "ar": ("al-", "Al-", "el-", "bin", "ibn", "Abu", "Abdel", "bint", "ben"),
    "ga": ("Ó", "Ní", "Mac", "Nic", "O'", "Mc"),
}
_ALL_PARTICLES = tuple(p for ps in _PARTICLES.values() for p in ps)
_CLEAN = re.compile(r"[^\W\d_]+(?:[-' .][^\W\d_]+)*\.?")


def _ascii_fold(value: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", value) if not unicodedata.combining(c))


@dataclass
class NamePool:
    """Given and family names per culture, and a letter model for inventing more."""

    given: dict[str, list[str]] = field(default_factory=dict)
    family: dict[str, list[str]] = field(default_factory=dict)
    _chain: dict[str, list[str]] = field(default_factory=dict)

    @property
    def cultures(self) -> list[str]:
        return sorted(self.given)

    def invent(self, rng: random.Random) -> str:
        """A word that reads like a name but is in no list (order-2 letter chain)."""
        for _ in range(50):
            out = "^^"
            while len(out) < 16:
                nxt = rng.choice(self._chain.get(out[-2:], ["$"]))
                if nxt == "$":
                    break
                out += nxt
            word = out[2:]
            if 3 <= len(word) <= 12:
                return word[0].upper() + word[1:]
        return "Ndlovu"

    def learn_letters(self) -> None:
        chain: dict[str, list[str]] = defaultdict(list)
        for names in (*self.given.values(), *self.family.values()):
            for name in names:
                for word in name.split():
                    w = "^^" + word.lower() + "$"
                    for i in range(2, len(w)):
                        chain[w[i - 2 : i]].append(w[i])
        self._chain = dict(chain)


def _romanize(faker: Any, locale: str) -> tuple[str, str]:
    from anyascii import anyascii

    if locale in ("ja_JP", "zh_CN"):
        return str(faker.first_romanized_name()), str(faker.last_romanized_name())
    given, family = str(faker.first_name()), str(faker.last_name())
    if locale == "ko_KR":  # anyascii runs syllables together: "JeongHun" -> "Jeonghun"
        return anyascii(given).capitalize(), anyascii(family).capitalize()
    return anyascii(given), anyascii(family)


def build_pool(locales: Sequence[str] | None = None, per_locale: int = 400, seed: int = 7) -> NamePool:
    """Distinct given and family names per locale, drawn from Faker with a fixed seed."""
    from faker import Faker

    chosen = list(locales) if locales is not None else [*_LATIN, *_TRANSLITERATED, *_ROMANIZED]
    pool = NamePool()
    for locale in chosen:
        faker = Faker(locale)
        faker.seed_instance(seed)
        given: set[str] = set()
        family: set[str] = set()
        for _ in range(per_locale):
            if locale in _TRANSLITERATED or locale in _ROMANIZED:
                g, f = _romanize(faker, locale)
            else:
                g, f = str(faker.first_name()), str(faker.last_name())
            for value, bucket in ((g, given), (f, family)):
                value = value.strip()
                if _CLEAN.fullmatch(value) and len(value) >= 2:
                    bucket.add(value)
        if given and family:
            pool.given[locale] = sorted(given)
            pool.family[locale] = sorted(family)
    pool.learn_letters()
    return pool


def _particle_group(locale: str) -> str | None:
    lang = locale.split("_")[0]
    if locale in ("fr_DZ", "en_PK", "ha_NG"):
        return "ar"
    return lang if lang in _PARTICLES else None


@dataclass(frozen=True)
class Person:
    """One person as written in one place: ``text`` is the whole name span."""

    text: str
    given: str
    family: str


def _pick(rng: random.Random, options: Sequence[tuple[float, Callable[[], str]]]) -> str:
    total = sum(w for w, _ in options)
    r = rng.random() * total
    for weight, make in options:
        r -= weight
        if r <= 0:
            return make()
    return options[-1][1]()


def make_person(pool: NamePool, rng: random.Random) -> Person:
    """A name in one of the forms people write: full, given or family alone, with a title
    or post-nominal, initials, hyphenated, with particles, surname first, invented."""
    culture = rng.choice(pool.cultures)
    other = rng.choice(pool.cultures) if rng.random() < 0.12 else culture

    def given_name() -> str:
        if rng.random() < 0.1:
            return pool.invent(rng)
        name = rng.choice(pool.given[culture])
        if rng.random() < 0.04:
            name = f"{name}-{rng.choice(pool.given[culture])}"
        return name

    def family_name() -> str:
        name = pool.invent(rng) if rng.random() < 0.12 else rng.choice(pool.family[other])
        r = rng.random()
        if r < 0.06:
            name = f"{name}-{rng.choice(pool.family[other])}"
        elif r < 0.10 and culture.split("_")[0] in ("es", "pt"):
            name = f"{name} {rng.choice(pool.family[other])}"
        group = _particle_group(other)
        if (group is not None and rng.random() < 0.15) or rng.random() < 0.02:
            particle = rng.choice(_PARTICLES[group] if group is not None else _ALL_PARTICLES)
            name = f"{particle}{name}" if particle.endswith(("-", "'")) else f"{particle} {name}"
        return name

    g, f = given_name(), family_name()
    if rng.random() < 0.1 and culture not in _FAMILY_FIRST:
        g = f"{g} {given_name()}"  # a middle name
    family_first = culture in _FAMILY_FIRST and rng.random() < 0.7

    def full() -> str:
        return f"{f} {g}" if family_first else f"{g} {f}"

    def initials() -> str:
        letters = [w[0].upper() for w in g.replace("-", " ").split() if w]
        dotted = rng.random() < 0.7
        sep = "" if rng.random() < 0.4 else " "
        init = sep.join(f"{c}." if dotted else c for c in letters)
        return f"{init} {f}" if rng.random() < 0.8 else f"{f} {init}"

    def titled(name: str) -> str:
        return f"{rng.choice(TITLES)} {name}"

    def post_nominal(name: str) -> str:
        sep = ", " if rng.random() < 0.5 else " "
        return f"{name}{sep}{rng.choice(POST_NOMINALS)}"

    text = _pick(
        rng,
        [
            (40, full),
            (14, lambda: g),
            (6, lambda: f),
            (7, lambda: titled(f)),
            (6, lambda: titled(full())),
            (4, lambda: post_nominal(full())),
            (1.5, lambda: titled(post_nominal(full()))),
            (5, initials),
            (3, lambda: f"{f}, {g}"),
            (2, lambda: f"{f.upper()} {g}"),
        ],
    )
    r = rng.random()
    if r < 0.08:
        text = _ascii_fold(text)
    return Person(text=text, given=g, family=f)
