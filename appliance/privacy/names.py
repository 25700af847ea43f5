"""Evidence that words are a person's name beyond what the NER model sees in one text.

The small English NER model misses names it has not seen in its training data (many
non-English names), names typed in lowercase, names in lists and names labelled as
places. These rules add what the rest of a text or request says about a word:

- :func:`propagate_names`: a name found once is a name everywhere in the request;
- :func:`names_near_emails`: capitalized words beside an address whose local part spells them;
- :func:`names_from_cues`: the grammar around a word (a title, a role or kinship noun,
  a speaker label in a dialogue, an answer to a question for a name, a list whose other
  items are names).

Each rule is general language evidence, not a list of names: a name no list holds is
found the same way. Words spaCy tags as an organisation, place or product are left
alone unless the evidence is strong (a title, a speaker label, an answer to "name?").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import regex
from spacy.lang.en.stop_words import STOP_WORDS
from spacy.tokens import Doc

from appliance.privacy.name_lexicon import HONORIFICS, is_ordinary
from appliance.privacy.spans import NER_TYPES, Detection

_PROPAGATED_SCORE = 0.9  # above NER guesses: the request itself already called this value a name

# What found a name, as a detection's ``recognizer`` (Presidio's recognizers use their class names).
PROPAGATED = "NameMentionedAgain"
NEAR_EMAIL = "NameNearEmail"
GRAMMAR = "NameGrammar"
_WORDISH = re.compile(r"[^\W\d_]{3,}")


def propagate_names(texts: Sequence[str], candidates: list[list[Detection]], allowed: set[str]) -> None:
    """A name found once is a name everywhere in the request.

    A conversation often names someone in full once ("I'm Anna Berg") and then in part
    or in another case ("anna here again", "Berg said"); the NER model sees each message
    alone and misses the later ones. Full names are matched in any case; single parts
    (three letters or more) only when capitalized, so "Will Smith" does not turn every
    "will" into a name.
    """
    full: set[str] = set()
    parts: set[str] = set()
    for text, found in zip(texts, candidates, strict=True):
        for d in found:
            if d.entity_type != "PERSON":
                continue
            value = " ".join(text[d.start : d.end].split())
            if len(value) >= 3 and value.casefold() not in allowed:
                full.add(value)
                parts.update(
                    p
                    for p in value.split(" ")
                    if _WORDISH.fullmatch(p) and p[0].isupper() and p.casefold() not in allowed
                )
    if not full or not _mentioned_again(texts, candidates, full | parts):
        return
    full_re = re.compile(
        r"(?<!\w)(?:"
        + "|".join(re.escape(v).replace(r"\ ", r"\s+") for v in sorted(full, key=len, reverse=True))
        + r")(?!\w)",
        re.IGNORECASE,
    )
    part_re = (
        re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in sorted(parts, key=len, reverse=True)) + r")(?!\w)")
        if parts
        else None
    )
    for text, found in zip(texts, candidates, strict=True):
        for pattern in (full_re, part_re):
            if pattern is None:
                continue
            found.extend(
                Detection(m.start(), m.end(), "PERSON", _PROPAGATED_SCORE, PROPAGATED) for m in pattern.finditer(text)
            )


def _mentioned_again(texts: Sequence[str], candidates: list[list[Detection]], values: set[str]) -> bool:
    """Whether some name or name part occurs more often than the spans already found hold it.

    A cheap case-insensitive count first: most requests name someone once, and building
    and running the propagation regexes (a fresh pattern per request) is then waste. A
    substring hit inside a longer word only means the exact regexes run.
    """
    folded = [" ".join(t.split()).casefold() for t in texts]
    found = [  # each place once: two detectors often find the same name
        " ".join(text[start:end].split()).casefold()
        for text, spans in zip(texts, candidates, strict=True)
        for start, end in {(d.start, d.end) for d in spans if d.entity_type == "PERSON"}
    ]
    for value in values:
        v = value.casefold()
        if sum(f.count(v) for f in folded) > sum(span.count(v) for span in found):
            return True
    return False


_EMAIL_NAME_SCORE = 0.75
# Mailboxes of roles, not people: their local part names no one.
_ROLE_MAILBOXES = frozenset(
    [
        "info",
        "sales",
        "support",
        "admin",
        "contact",
        "office",
        "help",
        "hello",
        "team",
        "noreply",
        "reply",
        "billing",
        "jobs",
        "careers",
        "press",
        "marketing",
        "service",
        "services",
        "webmaster",
        "postmaster",
        "security",
        "privacy",
        "legal",
        "accounts",
        "finance",
        "orders",
    ]
)
# Capitalized words that open a sentence or a header line before a name, not part of it.
_LEAD_WORDS = frozenset(
    [
        "contact",
        "email",
        "e-mail",
        "mail",
        "call",
        "ask",
        "reach",
        "send",
        "dear",
        "hi",
        "hello",
        "hey",
        "thanks",
        "thank",
        "cc",
        "bcc",
        "from",
        "to",
        "attn",
        "please",
        "ping",
        "message",
        "write",
        "tell",
        "invite",
        "meet",
        "forward",
        "and",
        "or",
        "with",
        "by",
        "for",
        "via",
        "i",
        "i'm",
        "i've",
        "i'd",
        "i'll",
        "im",
        "it's",
        "this",
        "the",
        "is",
        "am",
        "we",
        "my",
        "our",
        "mr",
        "mrs",
        "ms",
        "mx",
        "dr",
        "prof",
        "sir",
        "madam",
    ]
)
_CAPITALIZED = re.compile(r"[^\W\d_][^\W\d_'\u2019-]*(?:[-'\u2019][^\W\d_]+)*")
_LOCAL_PART = re.compile(r"[^\W\d_]{3,}")


def names_near_emails(text: str, found: list[Detection], allowed: set[str]) -> None:
    """Capitalized words near an e-mail address that spell part of its local part are a name.

    People are written next to their own address ("Contact Ana Lima-Souza at
    ana.lima@corp.example"); the small NER model often misses unusual or hyphenated names
    there, while the address itself is found with certainty. A capitalized run of words
    within 60 characters is taken as a PERSON when one of its words equals a 3+ letter
    piece of the local part. Ordinary words rarely collide with a mailbox name, and
    lowercase text is left to NER.
    """
    emails = [d for d in found if d.entity_type == "EMAIL_ADDRESS"]
    for email in emails:
        local = text[email.start : email.end].split("@", 1)[0]
        pieces = {p.casefold() for p in _LOCAL_PART.findall(local)} - _ROLE_MAILBOXES
        if not pieces:
            continue
        lo, hi = max(0, email.start - 60), min(len(text), email.end + 60)
        words = [m for m in _CAPITALIZED.finditer(text, lo, hi) if m.group()[0].isupper()]
        runs: list[list[re.Match[str]]] = []
        for m in words:
            if runs and text[runs[-1][-1].end() : m.start()].strip() == "" and m.start() - runs[-1][-1].end() <= 2:
                runs[-1].append(m)
            else:
                runs.append([m])
        for run in runs:
            while run and run[0].group().casefold().replace("\u2019", "'") in _LEAD_WORDS:
                run = run[1:]
            if not run or _overlaps(run, email):
                continue
            tokens = {t.casefold() for w in run for t in re.split(r"[-'\u2019]", w.group()) if len(t) >= 3}
            if tokens & pieces:
                start, end = run[0].start(), run[-1].end()
                if text[start:end].casefold() not in allowed:
                    found.append(Detection(start, end, "PERSON", _EMAIL_NAME_SCORE, NEAR_EMAIL))


def _overlaps(run: list[re.Match[str]], d: Detection) -> bool:
    return run[0].start() < d.end and d.start < run[-1].end()


# ---------------------------------------------------------------- grammatical cues

_STRONG_SCORE = 0.9  # above an NER guess (0.85): the grammar says person, not place
_CUE_SCORE = 0.7

_CAP = r"\p{Lu}[\p{L}'\u2019]+(?:-\p{L}[\p{L}'\u2019]*)*"
_PARTICLE = r"(?:van|von|der|den|de|da|dos|das|di|du|del|della|la|le|bin|ibn|al|ten|ter|y)"
_INITIAL = r"\p{Lu}\.?"
# One to four capitalized words, with initials and name particles inside ("Roxy R van der
# Torre", "Peer M. Villareal"); never starts or ends on a particle or an initial.
_NAME = (
    rf"{_CAP}(?:[ \t]+(?:{_PARTICLE}[ \t]+)*(?:{_CAP}|{_INITIAL}(?=[ \t]+(?:{_PARTICLE}[ \t]+)*\p{{Lu}}))){{0,3}}"
    r"(?![\p{L}\d])"
)

# Words that label a field or a line, not a person ("Email:", "Customer:", "Subject:").
FORM_LABELS = frozenset(
    [
        "name",
        "fullname",
        "firstname",
        "lastname",
        "surname",
        "email",
        "e-mail",
        "mail",
        "phone",
        "mobile",
        "cell",
        "tel",
        "telephone",
        "fax",
        "address",
        "street",
        "city",
        "state",
        "country",
        "zip",
        "postcode",
        "date",
        "time",
        "subject",
        "re",
        "fwd",
        "fw",
        "to",
        "from",
        "cc",
        "bcc",
        "note",
        "notes",
        "nb",
        "warning",
        "error",
        "info",
        "summary",
        "description",
        "title",
        "status",
        "priority",
        "ticket",
        "issue",
        "question",
        "answer",
        "user",
        "bot",
        "assistant",
        "system",
        "agent",
        "customer",
        "client",
        "support",
        "operator",
        "human",
        "ai",
        "step",
        "example",
        "update",
        "total",
        "amount",
        "price",
        "account",
        "iban",
        "ssn",
        "dob",
        "id",
        "reference",
        "ref",
        "order",
        "invoice",
        "card",
        "company",
        "department",
        "role",
        "position",
        "location",
        "source",
        "result",
        "response",
        "request",
        "comment",
        "comments",
        "reason",
        "action",
        "details",
        "escalation",
        "tip",
        "hint",
        "important",
        "caution",
        "attention",
        "attn",
        "ps",
        "edit",
        "quote",
        "output",
        "input",
        "text",
        "message",
        "reply",
        "feedback",
        "category",
        "type",
        "level",
        "code",
        "version",
        "url",
        "link",
        "website",
        "ip",
        "password",
        "username",
        "login",
        "host",
        "server",
        "port",
        "method",
        "path",
        "body",
        "header",
        "headers",
        "payload",
        "data",
        "value",
        "key",
        "token",
        "balance",
        "hostname",
        "on-call",
        "oncall",
        "kpi",
        "kpis",
    ]
)
_CALENDAR = frozenset(
    [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "january",
        "february",
        "march",
        "july",
        "september",
        "october",
        "november",
        "december",
    ]
)

_TITLE = regex.compile(r"(?<![\p{L}\d])" + HONORIFICS + r"[ \t]+(" + _NAME + ")")
_ROLES = (
    "colleague|co-?worker|partner|wife|husband|spouse|son|daughter|kid|child|mother|father|mom|mum|dad|brother"
    "|sister|friend|boss|manager|supervisor|customer|client|patient|tenant|employee|guardian|beneficiary|player"
    "|singer|songwriter|author|writer|actor|actress|director|founder|agent|officer|doctor|nurse|teacher|student"
    "|neighbou?r|uncle|aunt|cousin|grandma|grandpa|grandmother|grandfather|niece|nephew|fianc[ée]e?|roommate"
    "|landlord|lawyer|attorney|assistant|intern|candidate|applicant|caller|sender|recipient|named|called"
)
_ROLE = regex.compile(
    rf"(?<![\p{{L}}\d])(?i:{_ROLES})(?:['\u2019]s)?(?:[ \t]+(?i:name))?(?:[ \t]+(?i:is|was))?(?:[ \t]+(?i:him|her))?"
    rf"[ \t]+({_NAME})"
)
_KIN = (
    "wife|husband|spouse|partner|son|daughter|kid|kids|child|children|mother|father|mom|mum|dad|brother|sister"
    "|friend|boss|manager|assistant|colleague|uncle|aunt|cousin|niece|nephew|grandmother|grandfather|fianc[ée]e?"
)
_POSSESSIVE = regex.compile(rf"(?<![\p{{L}}\d])({_NAME})['\u2019]s?[ \t]+(?i:{_KIN})\b")
_NAME_ANSWER = regex.compile(rf"(?<![\p{{L}}\d])(?i:name)\b[^?\n]{{0,40}}\?[ \t]*(?:\p{{L}}+:[ \t]*)?({_NAME})")
_SPEAKER = regex.compile(rf"(?:^|(?<=[.!?\"\u201d)][ \t]{{1,3}}))[ \t]*({_CAP}(?:[ \t]+{_CAP})?)[ \t]*:", regex.M)
_SPEECH_BEFORE = regex.compile(
    rf"(?<![\p{{L}}\d])(?:said|says|asked|asks|told|tells|shouted at|yelled at|replied to|wrote to|thanked)[ \t]+"
    rf"({_NAME})"
)
_SPEECH_AFTER = regex.compile(
    rf"(?<![\p{{L}}\d])({_NAME})[ \t]+(?:said|says|asked|asks|shouted|yelled|replied|whispered|lives|lived)\b"
)
_ITEM = rf"(?:{_NAME})"
_LIST = regex.compile(
    rf"(?<![\p{{L}}\d])({_ITEM}(?:[ \t]*,[ \t]*{_ITEM})+(?:,?[ \t]+(?:and|or|&)[ \t]+{_ITEM})?"
    rf"|{_ITEM}[ \t]+(?:and|or|&)[ \t]+{_ITEM})(?![\p{{L}}\d])"
)
_LIST_SPLIT = regex.compile(r"[ \t]*,[ \t]*(?:(?:and|or|&)[ \t]+)?|,?[ \t]+(?:and|or|&)[ \t]+")

# spaCy labels that say "not a person". The small model calls many unfamiliar names ORG
# ("your colleague Tiffany Vazquez"), so ORG alone stops only the weakest cues; a word
# that names a kind of organisation ("Inc", "Bank") stops every cue.
_NOT_PERSON_LABELS = frozenset(
    {"GPE", "LOC", "FAC", "PRODUCT", "WORK_OF_ART", "EVENT", "LAW", "LANGUAGE", "NORP", "DATE", "TIME", "MONEY"}
)
_ORG_WORDS = frozenset(
    [
        "inc",
        "ltd",
        "co",
        "corp",
        "llc",
        "llp",
        "gmbh",
        "ag",
        "sa",
        "plc",
        "bv",
        "nv",
        "oy",
        "ab",
        "group",
        "bank",
        "university",
        "college",
        "school",
        "hospital",
        "clinic",
        "company",
        "corporation",
        "limited",
        "holdings",
        "foundation",
        "institute",
        "association",
        "agency",
        "ministry",
        "department",
        "council",
        "club",
        "team",
        "services",
        "solutions",
        "systems",
        "technologies",
        "partners",
        "industries",
        "international",
        "airlines",
    ]
)


_GREETINGS = ["hi", "hello", "hey", "dear", "thanks", "thank", "regards", "cheers", "yes", "no", "ok", "okay", "please"]
_TITLES = ["mr", "mrs", "ms", "mx", "dr", "prof", "sir", "madam", "miss", "dame", "herr", "frau", "mme", "mlle"]
# Chat shorthand a model may take for a short lower-case name ("pls send it", "thx Anna").
_CHAT_WORDS = [
    "pls", "plz", "thx", "thnx", "tx", "ty", "np", "fyi", "btw", "asap", "lol", "omg", "idk", "imo", "imho", "brb",
    "msg", "dm", "pm", "wrt", "eta", "eod", "eow", "ooo", "tbh", "afaik", "kk", "k", "ya", "yep", "nope",
    "rsvp", "nvm", "lmk", "tbd", "tba", "wfh", "iirc", "afk", "gtg", "ttyl", "jk", "smh", "ikr", "tyvm", "yw",
    "omw", "irl", "fwiw", "icymi", "tldr", "ofc", "rn", "ngl", "hmu", "otoh", "nbd", "ftw", "ack", "pto",
    # work shorthand: IT, sales, medicine, meetings (none a name part: not "ci", "po", "sow")
    "sku", "ssh", "config", "repo", "prod", "uat", "qa", "db", "vm", "k8s", "infra", "sre", "devops", "api",
    "url", "ux", "pr", "lgtm", "wip", "nit", "ts", "tz", "dx", "rx", "hx", "sx", "aob", "kpi", "okr", "opp",
    "nda", "rfp", "rfq",
    # hesitations, and Latin a model reads as a capitalized word's neighbour ("Per diem")
    "um", "umm", "uh", "uhm", "erm", "hmm", "diem", "annum", "capita",
]  # fmt: skip
# Greetings, sign-offs and form labels of other languages: a model trained on English frames
# takes a capitalized word above a signature or before a colon for a name ("Cordialement,",
# "Mit freundlichen Grüßen", "Nombre: ..."). Words that are also given names ("Salam",
# "Kasih", "Ville") or surnames ("Gentile", "Lieber") are left out.
_FOREIGN_WORDS = [
    # French
    "cordialement", "salutations", "amicalement", "respectueusement", "bonjour", "bonsoir", "merci", "bisous",
    "nom", "prénom", "prenom", "adresse", "téléphone", "courriel", "société", "objet",
    # Spanish
    "saludos", "saludo", "cordiales", "atentamente", "gracias", "hola", "buenos", "buenas", "abrazos", "besos",
    "estimado", "estimada", "estimados", "nombre", "apellido", "apellidos", "teléfono", "telefono", "dirección",
    "direccion", "ciudad", "correo", "fecha", "empresa", "asunto",
    # Portuguese
    "atenciosamente", "cumprimentos", "abraço", "abraços", "obrigado", "obrigada", "olá", "prezado", "prezada",
    "beijos", "nome", "endereço", "cidade", "telefone",
    # Italian
    "cordiali", "distinti", "saluti", "grazie", "ciao", "buongiorno", "egregio", "cognome",
    "indirizzo", "città", "oggetto",
    # German
    "freundlichen", "freundliche", "grüßen", "grüße", "grüssen", "grüsse", "herzliche", "herzlichen", "viele",
    "beste", "liebe", "hallo", "danke", "vielen", "dank", "geehrte", "geehrter", "vorname",
    "nachname", "anschrift", "telefon", "straße", "strasse", "geburtsdatum", "betreff",
    # Dutch and the Nordic languages
    "groeten", "groet", "vriendelijke", "hartelijke", "met", "bedankt", "voornaam", "achternaam", "adres",
    "woonplaats", "onderwerp", "hälsningar", "hälsning", "vänliga", "vänlig", "hilsen", "hilsner", "venlig",
    "venlige", "mvh", "tack", "takk", "tusen", "terveisin", "ystävällisin", "kiitos",
    # Central and Eastern Europe, Turkey
    "pozdrawiam", "pozdrowienia", "dziękuję", "pozdravem", "děkuji", "üdvözlettel", "köszönöm",
    "saygılarımla", "teşekkürler", "merhaba",  # noqa: RUF001 - Turkish spells them with the dotless i
]  # fmt: skip
_INTERJECTIONS = frozenset([*_GREETINGS, "sorry", *_TITLES, *_CHAT_WORDS, *_FOREIGN_WORDS])


# A chat mention ("@khalifa can you look?"): the handle names a person unless it names a
# group ("@here", "@oncall") or is an English word ("@support").
_MENTION = regex.compile(r"(?<![\p{L}\p{M}\d@._-])@(\p{L}[\p{L}\p{M}]+)(?![\p{L}\p{M}\d@._-])")
# An airline's or a courier's name field: "ONYANGO/AKINYI MS", "KOH/TECKSOON DR" (family
# name, a slash, given names, a title, in capitals; the title is what makes it a name).
_TRAVEL_NAME = regex.compile(
    r"(?<![\p{L}\d/])\p{Lu}[\p{Lu}'\u2019-]+(?: \p{Lu}[\p{Lu}'\u2019-]+)*/\p{Lu}[\p{Lu}'\u2019-]+"
    r"(?: \p{Lu}[\p{Lu}'\u2019-]+)*? (?:MR|MRS|MS|MISS|MSTR|MX|DR|PROF)(?![\p{L}\d])"
)
_GROUP_HANDLES = frozenset(
    """here channel everyone all team teams group room oncall devops sre ops infra admin admins mods everybody
    staff crew squad""".split()  # noqa: SIM905 - a word list reads best as words
)


def _personal_handle(handle: str) -> bool:
    return handle.casefold() not in _GROUP_HANDLES and not is_ordinary(handle) and plausible_name(handle)


def plausible_name(value: str) -> bool:
    """No word of it is a function word, a greeting, a form label, an organisation word
    or a day or month name ("I'm" counts as "I")."""
    words = [regex.split(r"['\u2019]", w.strip(".,;:!?"))[0].casefold() for w in value.split()]
    return bool(words) and not any(
        w in STOP_WORDS or w in _INTERJECTIONS or w in FORM_LABELS or w in _CALENDAR or w in _ORG_WORDS or not w
        for w in words
    )


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Drops leading and trailing words that cannot be part of a name ("The", "Customer")."""
    words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text[start:end])]
    while words and not plausible_name(text[words[0][0] : words[0][1]]):
        words.pop(0)
    while words and not plausible_name(text[words[-1][0] : words[-1][1]]):
        words.pop()
    if not words:
        return None
    return words[0][0], words[-1][1]


def names_from_cues(text: str, doc: Doc, found: list[Detection], allowed: set[str]) -> None:
    """Adds PERSON spans the grammar around them asks for (see the module docstring)."""
    cues = _Cues(text, doc, found, allowed)
    for m in _TITLE.finditer(text):
        cues.add(m.start(1), m.end(1), _STRONG_SCORE, overrule=True)
    for m in _NAME_ANSWER.finditer(text):
        cues.add(m.start(1), m.end(1), _STRONG_SCORE, overrule=True)
    for m in _ROLE.finditer(text):
        cues.add(m.start(1), m.end(1), _CUE_SCORE, overrule=False)
    for pattern in (_SPEECH_BEFORE, _SPEECH_AFTER, _POSSESSIVE):
        for m in pattern.finditer(text):
            cues.add(m.start(1), m.end(1), _CUE_SCORE, overrule=False, weak=True)
    speakers = [m for m in _SPEAKER.finditer(text) if plausible_name(m.group(1))]
    if len(speakers) >= 2:  # a dialogue: "Anna: hi ... Ben: hello"
        for m in speakers:
            cues.add(m.start(1), m.end(1), _STRONG_SCORE, overrule=True)
    for m in _LIST.finditer(text):
        cues.list_items(m.start(1), m.end(1))
    for m in _MENTION.finditer(text):
        if _personal_handle(m.group(1)):
            cues.add(m.start(1), m.end(1), _CUE_SCORE, overrule=True)
    for m in _TRAVEL_NAME.finditer(text):
        words = regex.split(r"[ /-]", m.group())[:-1]  # the title aside
        if not any(is_ordinary(w) or w.casefold() in _ORG_WORDS for w in words):  # "HR/FINANCE MS"
            cues.add_whole(m.start(), m.end())
    found.extend(cues.added)


class _Cues:
    def __init__(self, text: str, doc: Doc, found: list[Detection], allowed: set[str]) -> None:
        self.text = text
        self.found = found
        self.allowed = allowed
        self.not_person = [(e.start_char, e.end_char) for e in doc.ents if e.label_ in _NOT_PERSON_LABELS]
        self.orgs = [(e.start_char, e.end_char) for e in doc.ents if e.label_ == "ORG"]
        self.added: list[Detection] = []

    def _taken(self, start: int, end: int) -> bool:
        """Overlaps a value of a structured type (an email, a card): never a name."""
        return any(d.start < end and start < d.end and d.entity_type not in NER_TYPES for d in self.found)

    def add(self, start: int, end: int, score: float, overrule: bool, weak: bool = False) -> None:
        """``overrule``: the cue beats spaCy's place/thing label; ``weak``: even its ORG label beats the cue."""
        if any(w.strip(".,").casefold() in _ORG_WORDS for w in self.text[start:end].split()):
            return  # "Portal Services", "Acme Holdings": a company, whatever its first word
        span = _trim(self.text, start, end)
        if span is None:
            return
        s, e = span
        if self.text[s:e].casefold() in self.allowed or self._taken(s, e):
            return
        if not overrule and any(a < e and s < b for a, b in self.not_person):
            return
        if weak and any(a < e and s < b for a, b in self.orgs):
            return
        self.added.append(Detection(s, e, "PERSON", score, GRAMMAR))

    def add_whole(self, start: int, end: int) -> None:
        """A name in a format that leaves no doubt, its title included (not trimmed)."""
        if self.text[start:end].casefold() not in self.allowed and not self._taken(start, end):
            self.added.append(Detection(start, end, "PERSON", _STRONG_SCORE, GRAMMAR))

    def list_items(self, start: int, end: int) -> None:
        """In "Anna, Ben and Carla" one item found as a name makes the others names, as
        long as more items are names than places or organisations."""
        items = []
        position = start
        for sep in _LIST_SPLIT.finditer(self.text, start, end):
            items.append((position, sep.start()))
            position = sep.end()
        items.append((position, end))
        known = self.found + self.added
        people = [i for i in items if any(d.entity_type == "PERSON" and d.start < i[1] and i[0] < d.end for d in known)]
        others = [
            i
            for i in items
            if i not in people
            and (
                any(a < i[1] and i[0] < b for a, b in self.not_person)
                or any(d.start < i[1] and i[0] < d.end for d in known)
                or not plausible_name(self.text[i[0] : i[1]])
            )
        ]
        if not people or len(people) <= len(others):
            return
        overrule = len(people) >= 2
        for s, e in items:
            if (s, e) not in people:
                self.add(s, e, _STRONG_SCORE if overrule else _CUE_SCORE, overrule=overrule)


_ACRONYM = regex.compile(r"\p{Lu}{2,4}")


def drop_non_names(text: str, found: list[Detection]) -> None:
    """Trims form labels and function words off PERSON spans and drops what is left
    when nothing or only a short acronym remains: the NER model tags "Email", "SSN" or
    "Michelle Russell Email" beside the values such words label."""
    kept = []
    for d in found:
        if d.entity_type == "PERSON":
            span = _trim(text, d.start, d.end)
            if span is None or _ACRONYM.fullmatch(text[span[0] : span[1]]):
                continue
            d = Detection(span[0], span[1], d.entity_type, d.score, d.recognizer)
        kept.append(d)
    found[:] = kept


_NEXT_WORD = regex.compile(r"[ \t]+([\p{L}.]+)")


def names_a_company(text: str, end: int) -> bool:
    """The word after ``end`` names a kind of organisation: "Acme Holdings", "Okafor Bank"."""
    m = _NEXT_WORD.match(text, end)
    return m is not None and m.group(1).strip(".").casefold() in _ORG_WORDS
