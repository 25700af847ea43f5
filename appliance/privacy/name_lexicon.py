"""What the words of a PERSON guess say about it: an ordinary word, a place, an eponym.

The name model reads casing and context; it has no dictionary. So it sometimes calls a
person what any reader knows is not one: a lone English word ("Housekeeping", "payslip",
"thyroiditis"), a street or an airport named after someone ("Samora Machel Avenue",
"Avenida Benito Juárez", "Jomo Kenyatta International Airport"), or the person in an eponym
("Hashimoto's thyroiditis", "Ohm's law"). :func:`judge_names` settles those cases with
knowledge of English, not with a list of the names it saw:

* **Ordinary words.** A guess made only of common English words that are not also given or
  family names (the shipped lexicon: WordNet's lemmas minus every name Faker knows; see
  ``name_training/lexicon.py``) is dropped unless a title stands before it ("Mr Head"). A
  word that is both ("Hope", "Mark", "Lee") is never dropped for this. Lower-case ordinary
  words at the edges of a longer guess are trimmed ("flaky Grafana" -> "Grafana").
* **Places.** A guess followed by a place word ("Road", "Airport") or preceded by a street
  word in any of several languages ("Avenida", "Jalan", "Rue") becomes a LOCATION over the
  whole place (still replaced when the policy replaces places).
* **Eponyms and organisations.** A guess followed by an eponym's head ("'s disease",
  "syndrome", "'s law") or ending in an organisation word ("Umoja Solar", "Kestrel
  Freight") is not a person.

Mentions of a name the request confirmed elsewhere are not judged here: the gate runs
before names spread to their other mentions.
"""

# ruff: noqa: RUF001  (Turkish street words are spelled with the dotless i)
from __future__ import annotations

import functools
import gzip
import itertools

import regex
from spacy.lang.en.stop_words import STOP_WORDS

from appliance.privacy.name_model import NAME_MODEL_DIR
from appliance.privacy.spans import Detection, token_around

__all__ = [
    "HONORIFICS",
    "LEXICON_FILE",
    "MONTHS",
    "NAME_WORDS_FILE",
    "PLACE_WORDS",
    "WEEKDAYS",
    "addressed_or_titled",
    "common_words",
    "honorific_before",
    "is_calendar_word",
    "is_name_word",
    "is_ordinary",
    "judge_names",
    "shipped_lines",
]

LEXICON_FILE = "common_words.txt.gz"
NAME_WORDS_FILE = "name_words.txt.gz"

_TOKEN = regex.compile(r"\p{L}[\p{L}\p{M}'\u2019]*(?:-\p{L}[\p{L}\p{M}'\u2019]*)*")
_TITLE_BEFORE = regex.compile(
    r"(?<![\p{L}\d])(?i:mr|mrs|ms|mx|miss|mister|dr|doctor|prof|professor|sir|dame|lady|lord|rev|fr|herr|frau|mme"
    r"|madame|monsieur|señor|señora|sra|sr|dhr|mevr|sheikh|chief|captain|capt|judge|justice|pastor|imam|rabbi"
    r"|uncle|auntie|aunt|coach|nurse|officer|agent|detective|inspector|sergeant|sgt)\.?[ \t]+$"
)
# Titles that only ever stand before a person's name, in several languages ("Madame
# Coulibaly", "mnr. van der Merwe", "Bi. Kombo"): the name after one is a name even when
# the model has never seen it. Not the ranks and roles above ("Chief", "Coach", "General").
HONORIFICS = (
    r"(?:(?i:mr|mrs|ms|mx|dr|prof|mnr|mev|dhr|mevr)\.?|(?:Bi|Bw)\.|(?:Miss|Mister|Doctor|Professor|Sir|Dame|Madam"
    r"|Madame|Mme|Mademoiselle|Mlle|Monsieur|Herr|Frau|Señor|Señora|Señorita|Sra|Srta|Signor|Signora|Mevrouw"
    r"|Meneer)\.?)"
)
_HONORIFIC_BEFORE = regex.compile(rf"(?<![\p{{L}}\d]){HONORIFICS}[ \t]+$")


def honorific_before(text: str, start: int) -> int | None:
    """Where a title that only stands before a person's name begins, when one ends right
    before ``start``."""
    m = _HONORIFIC_BEFORE.search(text, max(0, start - 16), start)
    return None if m is None else m.start()


# Particles inside a name are ordinary words too ("van", "bin", "de"): never judged alone.
_PARTICLES = frozenset(
    """van von der den de da das do dos du del della la le lo di bin binti ibn ben bat al el ul ter ten y e mac
    nic ap ab abu abd abdel abdul""".split()  # noqa: SIM905 - a word list reads best as words
)

# Words after a name that make it a place. Words that are also common surnames ("Park",
# "Hill", "Hall", "Lane", "Church", "Temple") are left out: "Anna Park" is a person.
_PLACE_AFTER = frozenset(
    """road rd street avenue ave boulevard blvd highway hwy expressway freeway parkway crescent terrace
    embankment quay wharf airport aerodrome station terminal harbour harbor stadium arena cathedral mosque
    masjid synagogue monastery abbey palace museum memorial monument mausoleum university hospital airfield
    bazaar marg bulvar bulvarı caddesi sokak sokağı utca körút weg laan gatan gata vej gade""".split()  # noqa: SIM905 - a word list reads best as words
)
# Street names written as one word: "Friedrich-Ebert-Straße", "Kalverstraat", "Drottninggatan".
_PLACE_SUFFIX = regex.compile(r"(?i:straße|strasse|gasse|platz|allee|straat|gatan|gaten|vegen|vej|gade|utca)$")
# Words before a name that make it a street or a place, in several languages.
_PLACE_BEFORE = frozenset(
    """avenida av avda rua calle carrera calzada paseo plaza praça praca largo travessa alameda rambla jalan jl
    lorong lebuh lebuhraya rue boulevard bd avenue allée chemin quai via viale piazza corso strada calea
    bulevardul strasse straße ulitsa ulica ul utca prospekt shosse sokak sokağı cadde caddesi đường phố
    thanon soi mount mt place""".split()  # noqa: SIM905 - a word list reads best as words
)
# The head of an eponym: "Parkinson's disease", "Down syndrome", "Ohm's law", "Nobel Prize".
# Only a one-word guess is judged so ("Maria Lopez's disease" is a patient's).
_EPONYM_HEADS = frozenset(
    """disease diseases syndrome palsy thyroiditis encephalopathy lymphoma sarcoma anomaly phenomenon law
    theorem lemma conjecture constant equation principle paradox algorithm prize scholarship fellowship
    medal cube razor""".split()  # noqa: SIM905 - a word list reads best as words
)
# Heads that make an eponym only right after the name, never after a possessive: "Gantt
# chart", "Petri dish", "Epstein-Barr virus" (but "Maria's chart" is a patient's).
_BARE_EPONYM_HEADS = frozenset(
    """chart charts diagram diagrams virus scale dish burner effect maneuver manoeuvre scheme transform
    distribution curve coefficient board boards method distance score scores test index ratio criteria sign
    reflex formula matrix filter cipher section compliance""".split()  # noqa: SIM905 - a word list reads best as words
)
# Heads of laws and doctrines, capitalized right after the name: "the Sarbanes-Oxley Act",
# "the Monroe Doctrine", "the Volcker Rule".
_TITLED_EPONYM_HEADS = frozenset(
    "act acts amendment doctrine rule treaty accord directive regulation convention protocol".split()  # noqa: SIM905
)
_EPONYM_AFTER = regex.compile(
    r"^(?:['\u2019]s?)?[ \t]+(\p{L}+)(?![\p{L}\d-])(?![ \t]+(?:firm|office|school|practice|degree|student|clerk))"
)
# The last word of an organisation's name: "Umoja Solar", "Kestrel Freight", "Tamarind Foods".
_ORG_LAST = frozenset(
    """inc ltd llc llp plc gmbh corp co group bank holdings partners solutions systems technologies industries
    international airlines airways foods food solar energy analytics digital dental freight couriers courier
    logistics shipping insurance assurance mutual media consulting consultants capital ventures investments
    labs laboratories pharma pharmaceuticals motors studio studios trading resorts veterinary realty
    properties construction telecom networks software services enterprises associates agency foundation
    trust bakery restaurant cafe café pharmacy comms communications relations resources operations procurement
    facilities payroll compliance helpdesk marketing cement steel mills textiles petroleum chemicals paints
    brewery breweries beverages tyres tires electronics transport transportes transports haulage removals
    hurtownia seguros aseguradora gruppe gruppo groupe grupo holding holdings industria industrias
    comercial comercio distribuidora construcciones construtora ingeniería engenharia asociados abogados
    hermanos hnos ltda sarl srl spa sdn bhd tbk pty kft zrt""".split()  # noqa: SIM905 - a word list reads best as words
)
_ADDRESSED_BEFORE = regex.compile(
    r"(?<![\p{L}\d-])(?i:hi|hello|hey|dear|thanks|thank[ \t]+you|cheers|congrats|congratulations|welcome|bye"
    r"|morning|evening|happy[ \t]+birthday|cc|ping|ask|asked|tell|told|thank|call|called|met|meet|meeting[ \t]+with"
    r"|talk[ \t]+to|talked[ \t]+to|spoke[ \t]+(?:to|with)|email|emailed|message|messaged|@)[ \t,]*$"
)
# Street and place words of any language, before or after a place's name.
PLACE_WORDS = _PLACE_BEFORE | _PLACE_AFTER
_POSSESSIVE = regex.compile(r"['\u2019]s(?![\p{L}\d])")
_NEXT = regex.compile(r"^[ \t]+(\p{L}[\p{L}.]*)")
# The rest of a name stands one space away: wider gaps and tabs part a form's fields
# ("Pt: Tonatiuh Cuautle   Therapist: ...").
_NEXT_IN_NAME = regex.compile(r"^ (\p{L}[\p{L}.]*)")
_PREV_IN_NAME = regex.compile(r"(?<!\p{L})(\p{L}[\p{L}.]*) $")


# Months and weekdays: "April", "May", "June" and "August" are also given names, so a guess
# made of them is judged by its context (gazetteers.py); beside a guess they never make it
# a name ("the May and June payslips").
MONTHS = frozenset(
    "january february march april may june july august september october november december".split()  # noqa: SIM905
)
WEEKDAYS = frozenset("monday tuesday wednesday thursday friday saturday sunday".split())  # noqa: SIM905


def is_calendar_word(word: str) -> bool:
    """A month or a weekday, in any case ("April", "MONDAY")."""
    w = word.casefold().strip(".")
    return w in MONTHS or w in WEEKDAYS


def shipped_lines(list_file: str) -> frozenset[str]:
    """The non-empty lines of a gzipped list shipped beside the name model."""
    with gzip.open(NAME_MODEL_DIR / list_file, "rt", encoding="utf-8") as fh:
        return frozenset(line.strip() for line in fh if line.strip())


@functools.cache
def common_words() -> frozenset[str]:
    """English words that are not names (lower case), from the shipped lexicon."""
    return shipped_lines(LEXICON_FILE)


@functools.cache
def _name_words() -> frozenset[str]:
    return shipped_lines(NAME_WORDS_FILE)


def is_name_word(word: str) -> bool:
    """A name that is also an English verb, adjective or adverb ("Frank", "Grace", "Bill")."""
    return word.casefold() in _name_words()


def is_ordinary(word: str) -> bool:
    """A common English word (or a noun's plural: "payslips") that is not also a name."""
    w = word.casefold().replace("\u2019", "'")
    return (w[:-2] if w.endswith("'s") else w) in common_words()


def _ordinary(token: str) -> bool:
    """``is_ordinary``, and a hyphenated word whose parts are, or whose parts joined are
    ("Mark-ups": "markups")."""
    return token.casefold() not in _PARTICLES and (
        is_ordinary(token)
        or all(is_ordinary(p) for p in token.split("-") if p)
        or ("-" in token and is_ordinary(token.replace("-", "")))
    )


def judge_names(text: str, found: list[Detection], *, locations: bool) -> None:
    """Drops, trims or relabels PERSON guesses as the module docstring says. ``locations``:
    whether the policy detects LOCATION (else a place found this way is simply no person)."""
    kept: list[Detection] = []
    for d in found:
        if d.entity_type != "PERSON":
            kept.append(d)
            continue
        judged = _judge(text, d, locations)
        if judged is not None:
            kept.append(judged)
    found[:] = kept


def _judge(text: str, d: Detection, locations: bool) -> Detection | None:
    tokens = list(_TOKEN.finditer(text, d.start, d.end))
    if not tokens:
        return d
    place = _place(text, d, tokens)
    if place is not None:
        return Detection(place[0], place[1], "LOCATION", d.score, d.recognizer) if locations else None
    if _TITLE_BEFORE.search(text[max(0, d.start - 20) : d.start]):
        return d
    if (len(tokens) == 1 and _is_eponym(text, d.start, d.end)) or _names_an_org(text, d.end, tokens[-1].group()):
        return None
    if len(tokens) == 1 and _firm_slot(text, d.start, d.end):
        return None  # "Employer: Peroni", "Customer Success Manager, Kohler"
    if _code(text, d.start, d.end):
        return None  # an identifier in code: "`dijkstra()`", "rename lovelace() to ..."
    if _REFERENCE_AFTER.match(text, tokens[-1].end()) and tokens[-1].group().isupper():
        return None  # a reference's prefix: "TCK-415439", "PNR REQ-153811"
    if _software_after(text, d.end):
        return None  # "the Flask plugin", "a Jira connector"
    # A job title after a name is no part of it ("Scrum Master", "Hon. judge", "Jo Lee Analyst").
    whole = len(tokens)
    while len(tokens) > 1 and _role_word(tokens[-1].group()):
        tokens.pop()
    if len(tokens) < whole and all(_ordinary(t.group()) or _TITLE_WORD.fullmatch(t.group()) for t in tokens):
        return None
    if all(_ordinary(t.group()) for t in tokens) and not _person_cue(text, d.start, d.end):
        return None
    if _lower_case_words(text, d, tokens) and not _person_cue(text, d.start, d.end):
        return None  # "to be frank", "so far", "a general enquiry" in a text that writes names with capitals
    # Lower-case ordinary words at the edges of a longer guess are not part of the name.
    while len(tokens) > 1 and tokens[0].group()[0].islower() and _ordinary(tokens[0].group()):
        tokens.pop(0)
    while len(tokens) > 1 and tokens[-1].group()[0].islower() and _ordinary(tokens[-1].group()):
        tokens.pop()
    return Detection(tokens[0].start(), tokens[-1].end(), d.entity_type, d.score, d.recognizer)


# Job titles after a name. Capitalized, only those that are no surname ("Judge", "Head",
# "Clerk" and "Lead" are); in lower case, those too.
_ROLE_WORDS = frozenset(
    """manager director officer engineer associate analyst consultant coordinator specialist intern assistant
    secretary advisor adviser administrator developer designer auditor accountant controller supervisor
    technician therapist paralegal recruiter master""".split()  # noqa: SIM905 - a word list reads best as words
)
_LOWER_ROLE_WORDS = _ROLE_WORDS | frozenset("judge head clerk lead counsel nurse".split())  # noqa: SIM905
_TITLE_WORD = regex.compile(
    r"(?i:mr|mrs|ms|mx|miss|dr|prof|sir|dame|lady|lord|rev|hon|honourable|honorable|herr|frau|mme|sheikh)"
)


def _role_word(word: str) -> bool:
    w = word.casefold()
    return w in _LOWER_ROLE_WORDS if word.islower() else w in _ROLE_WORDS


_CAPITAL_OPENING = regex.compile(r"(?:^|[.!?][ \t]+|\n[ \t]*)\p{Lu}")


def _lower_case_words(text: str, d: Detection, tokens: list[regex.Match[str]]) -> bool:
    """A lower-case guess of English words ("frank", "far", "general", some of them also
    names) inside a text whose sentences open with capitals: such a text writes its names
    with capitals too. All-lower-case chat ("grace is out today") is left to the model."""
    return (
        all(t.group().islower() and (is_name_word(t.group()) or _ordinary(t.group())) for t in tokens)
        and not _sentence_start(text, d.start)
        and _CAPITAL_OPENING.search(text) is not None
    )


def addressed_or_titled(text: str, start: int) -> bool:
    """A title ("Dr", "Coach") or a greeting or verb addressed to a person ("Hi", "ask")
    right before ``start``."""
    return bool(
        _TITLE_BEFORE.search(text[max(0, start - 20) : start])
        or _ADDRESSED_BEFORE.search(text[max(0, start - 30) : start])
    )


def _person_cue(text: str, start: int, end: int) -> bool:
    """What makes even an ordinary word a name here: a greeting or a verb addressed to a
    person before it ("Hi Yaw", "ask Gift"), a capitalized possessive ("Mere's handling"),
    or a capitalized word that is no ordinary word beside it (the rest of the name the
    model did not mark: "Will Sutherland", "Inês Marques")."""
    if _ADDRESSED_BEFORE.search(text[max(0, start - 30) : start]) or _NAME_LABEL_BEFORE.search(
        text, max(0, start - 30), start
    ):
        return True
    if _FAMILY_FIRST.match(text, start) and _line_start(text, start):
        return True
    if _POSSESSIVE.match(text, end) and text[start].isupper() and not _sentence_start(text, start):
        return True
    before = _PREV_IN_NAME.search(text[max(0, start - 40) : start])
    after = _NEXT_IN_NAME.match(text[end : end + 40])
    return any(m is not None and _name_like(m.group(1).strip(".")) for m in (before, after))


# A form's label for a person's name: "Name: Aken Ghee", "Patient: Ridley, Hope".
_NAME_LABEL_BEFORE = regex.compile(
    r"(?<![\p{L}\d])(?i:(?:full[ \t]+|legal[ \t]+|family[ \t]+|given[ \t]+|first[ \t]+|last[ \t]+)?name|surname"
    r"|patient|employee|applicant|passenger|traveller|traveler|guest|tenant|student|cardholder|account[ \t]+holder"
    r"|policyholder|claimant|attn)[ \t]*:[ \t]*$"
)
# "RIDLEY, Hope": a family name in capitals, a comma and a given name, opening a line or a field.
_FAMILY_FIRST = regex.compile(r"\p{Lu}{2,}(?:[-' ]\p{Lu}{2,})*,[ \t]+\p{Lu}\p{Ll}+(?![\p{L}\d])")


def _line_start(text: str, start: int) -> bool:
    head = text[:start].rstrip(" \t")
    return not head or head[-1] in "\n:;|,\t"


def _name_like(word: str) -> bool:
    return (
        len(word) > 1
        and word[0].isupper()
        and word.casefold() not in STOP_WORDS
        and not _ordinary(word)
        and not is_calendar_word(word)
    )


def _sentence_start(text: str, start: int) -> bool:
    head = text[:start].rstrip(" \t")
    return not head or head[-1] in ".!?\n"


def _place(text: str, d: Detection, tokens: list[regex.Match[str]]) -> tuple[int, int] | None:
    """The whole place when the guess names one: "Samora Machel Avenue", "Jalan Tun Razak",
    and a guess that is only part of a person's name in a place's ("Jomo" in "Jomo Kenyatta
    International Airport", "Brown" in "Avenue John Brown")."""
    first = tokens[0].group()
    if first[0].isupper() and first.casefold().strip(".") in _PLACE_BEFORE | _PLACE_AFTER:
        return d.start, d.end  # "Avenida Pedro de Valdivia", or a lone "Avenue" or "Airport"
    if any(
        t.group()[0].isupper() and (t.group().casefold() in _PLACE_AFTER or _PLACE_SUFFIX.search(t.group()))
        for t in tokens
    ):
        return d.start, d.end  # the place word is inside the guess
    joined = _HYPHENATED_TAIL.match(text, d.end)
    if joined is not None and _PLACE_SUFFIX.search(joined.group()):
        return d.start, joined.end()  # "Friedrich" in "Friedrich-Ebert-Straße"
    after = _name_parts_after(text, d.end)
    before = _name_parts_before(text, d.start)
    for i, part in enumerate(after):
        word = part.group().casefold().strip(".")
        if word in _PLACE_AFTER or _PLACE_SUFFIX.search(word):
            # "[Benito] Juárez [International] Airport", "Jomo [Kenyatta International] Airport"
            lead = list(itertools.takewhile(lambda p: p.group().casefold().strip(".") not in PLACE_WORDS, before))
            return (lead[-1].start() if lead else d.start), part.end() - part.group().endswith(".")
        if i == 0 and word in _PLACE_BEFORE:
            break  # "Ana Lima Rua das Flores": the next place begins here
    for part in before:
        if part.group().casefold().strip(".") in _PLACE_BEFORE:
            rest = [p for p in after if p.group().casefold().strip(".") not in _PLACE_BEFORE]
            return part.start(), (rest[-1].end() if rest else d.end)  # "Rue [Victor] Hugo"
    return None


# One word of a name inside a place's name: capitalized ("Kenyatta", "Jean-Jacques",
# "International"), an initial ("F."), or a particle ("de", "da").
_NAME_PART = regex.compile(
    r"\p{Lu}[\p{L}\p{M}'\u2019]*(?:-\p{L}[\p{L}\p{M}'\u2019]*)*\.?"
    r"|(?:" + "|".join(sorted(_PARTICLES)) + r")(?![\p{L}\d])"
)
_PARTS_LOOKED_AT = 5
_LAST_WORD = regex.compile(r"(?:^|(?<=[^\p{L}\p{M}'\u2019.-]))[\p{L}][\p{L}\p{M}'\u2019.-]*$")
_HYPHENATED_TAIL = regex.compile(r"(?:-\p{L}[\p{L}\p{M}'\u2019]*)+")


def _name_parts_after(text: str, end: int) -> list[regex.Match[str]]:
    """The words of a name (or a place word) right after ``end``, one space apart, on its line."""
    parts: list[regex.Match[str]] = []
    while len(parts) < _PARTS_LOOKED_AT and text[end : end + 1] == " ":
        m = _NAME_PART.match(text, end + 1)
        if m is None or (m.end() < len(text) and text[m.end()].isalnum()):
            break
        parts.append(m)
        end = m.end()
    return parts


def _name_parts_before(text: str, start: int) -> list[regex.Match[str]]:
    """The same, right before ``start``, nearest first."""
    parts: list[regex.Match[str]] = []
    while len(parts) < _PARTS_LOOKED_AT and start > 0 and text[start - 1] == " ":
        head = text[max(0, start - 41) : start - 1]
        m = _LAST_WORD.search(head)
        if m is None:
            break
        word_start = start - 1 - (len(head) - m.start())
        part = _NAME_PART.fullmatch(text, word_start, start - 1)
        if part is None:
            break
        parts.append(part)
        start = word_start
    return parts


_REFERENCE_AFTER = regex.compile(r"[-/#]?\d")
# Words after a name that make it software, not a person: "the Flask plugin", "a Kafka cluster".
_SOFTWARE_AFTER = frozenset(
    "plugin plugins plug-in add-on addon sdk framework connector cluster pipeline repo repository library".split()  # noqa: SIM905
)


# Where a lone word names a firm, not a person: after a company's role ("Employer: Peroni",
# "supplier Liebherr"), or after a job title and a comma, closing a signature's line
# ("Customer Success Manager, Kohler"). A full name there is still a person's.
_FIRM_LABEL_BEFORE = regex.compile(
    r"(?<![\p{L}\d])(?i:employer|employed[ \t]+by|vendor|supplier|merchant|manufacturer|retailer|distributor|reseller"
    r"|insurer|carrier|brand)[ \t]*:?[ \t]*$"
)
_JOB_TITLE_COMMA_BEFORE = regex.compile(r"(?<![\p{L}\d])(\p{L}+),[ \t]*$")


def _firm_slot(text: str, start: int, end: int) -> bool:
    if _FIRM_LABEL_BEFORE.search(text, max(0, start - 30), start):
        return True
    title = _JOB_TITLE_COMMA_BEFORE.search(text, max(0, start - 30), start)
    if title is None or title.group(1).casefold() not in _ROLE_WORDS:
        return False
    return text[end:].lstrip(" \t")[:1] in ("", "\n")


def _code(text: str, start: int, end: int) -> bool:
    """A function called in code ("dijkstra(") or a word quoted as code (in backticks)."""
    if text[end : end + 1] == "(":
        return True
    token = token_around(text, start, end)
    return token.startswith("`") and "`" in token[1:]


def _software_after(text: str, end: int) -> bool:
    after = _NEXT.match(text[end : end + 40])
    return after is not None and after.group(1).casefold().strip(".") in _SOFTWARE_AFTER


# A family firm: "Amadi & Sons Ltd", "Moreau et Fils", "García e Hijos".
_FAMILY_FIRM_AFTER = regex.compile(
    r"^[ \t]*(?:&|and|\+|et|e|y|und|en)[ \t]+(?:Sons|Son|Daughters|Co|Company|Partners|Associates|Brothers|Bros"
    r"|Söhne|Sohn|Cie|Fils|Frères|Hijos|Hermanos|Filhos|Irmãos|Figli|Fratelli|Zonen|Zn)(?![\p{L}\d])"
)


def _names_an_org(text: str, end: int, last: str) -> bool:
    """The guess ends in, or is followed by, an organisation word: "Umoja Solar", "Tamarind
    Foods", "Amadi & Sons"."""
    if last.casefold().strip(".") in _ORG_LAST or _FAMILY_FIRM_AFTER.match(text[end : end + 40]):
        return True
    after = _NEXT_IN_NAME.match(text[end : end + 40])  # one space: a tab parts a table's cells
    return after is not None and after.group(1)[0].isupper() and after.group(1).casefold().strip(".") in _ORG_LAST


def _is_eponym(text: str, start: int, end: int) -> bool:
    m = _EPONYM_AFTER.match(text[end : end + 40])
    if m is None:
        return False
    head = m.group(1).casefold()
    if head in _EPONYM_HEADS:
        return True
    if text[end] not in " \t":  # a possessive: only the heads above
        return False
    if head in _TITLED_EPONYM_HEADS and m.group(1)[0].isupper():
        return True
    return head in _BARE_EPONYM_HEADS and not _ADDRESSED_BEFORE.search(text[max(0, start - 30) : start])
