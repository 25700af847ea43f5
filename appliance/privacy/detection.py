"""The detector: many texts, one pass through spaCy, then Presidio's recognizers per text,
then one deterministic answer per character.

Built once per process (loading the NER model takes seconds) and shared by every
request thread. spaCy inference runs under a lock, because spaCy does not promise that
one pipeline may be used from several threads at once; the recognizers after it are
stateless and run in parallel.

Offsets are Python string indices (Unicode code points), the same as spaCy's and
Presidio's; callers slice the text they sent with them. Texts are never normalized, so
offsets stay true to the caller's text whatever it contains (emoji, CJK, combining marks).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from spacy.language import Language
from spacy.tokens import Doc

from appliance.config import PrivacySettings
from appliance.errors import InvalidInput
from appliance.privacy.engine import LANGUAGE, NerOnlyNlpEngine, build_analyzer, load_ner_pipeline, make_nlp_engine
from appliance.privacy.recognizers import (
    FIVE_DIGITS,
    GATES,
    CustomRecognizerCache,
    PhoneNumberRecognizer,
    build_registry,
    entity_types,
)
from appliance.privacy.rules import PrivacyRules

# Overlap tiers, highest first: formats with real structure or strong checksums (email,
# card, IBAN, IP, SSN, ...); phone numbers, which are any digit run of a possible length
# and so also match IP addresses and card numbers; bare digit-run identifiers whose
# checks pass by chance (one random 10-digit run in 11 is a "valid" NHS number, and a US
# phone number has the same 3-3-4 shape); and what a statistical model guessed (a phone
# number also tagged DATE by NER). Score decides only within a tier.
_NER_TYPES = frozenset({"PERSON", "LOCATION", "NRP", "DATE_TIME", "ORGANIZATION"})
_PHONE = "PHONE_NUMBER"
_WEAK_TYPES = frozenset({"UK_NHS", "US_BANK_NUMBER", "US_DRIVER_LICENSE", "US_PASSPORT", "US_ITIN", "MEDICAL_LICENSE"})


def _tier(entity_type: str) -> int:
    if entity_type in _NER_TYPES:
        return 0
    if entity_type in _WEAK_TYPES:
        return 1
    return 2 if entity_type == "PHONE_NUMBER" else 3


_PIPE_BATCH = 64


@dataclass(frozen=True, order=True)
class Detection:
    """One entity in one text: ``text[start:end]`` is the value. Carries no value itself,
    so a Detection can be logged or audited without leaking what it points at."""

    start: int
    end: int
    entity_type: str
    score: float


class Detector:
    """Thread-safe PII detector over the configured NER pipeline and pattern recognizers."""

    def __init__(self, settings: PrivacySettings) -> None:
        self._settings = settings
        self._nlp: Language = load_ner_pipeline(settings)
        self._engine: NerOnlyNlpEngine = make_nlp_engine(self._nlp, settings)
        self._analyzer: AnalyzerEngine = build_analyzer(self._engine, build_registry(self._engine))
        self._phone = PhoneNumberRecognizer()
        self._supported = set(self._analyzer.get_supported_entities(LANGUAGE)) | {_PHONE}
        self._custom = CustomRecognizerCache()
        self._nlp_lock = threading.Lock()
        # First use builds tldextract's suffix table and compiles every recognizer's
        # regexes (about half a second); pay it at start-up, not in a caller's request.
        self.analyze(["Warm-up: a.b@example.org, +1 212 555 0100, 203.0.113.1, Ann Lee in Paris."], PrivacyRules())

    @property
    def supported_entities(self) -> frozenset[str]:
        return frozenset(self._supported)

    @property
    def patterns_only(self) -> bool:
        return self._settings.patterns_only

    def analyze(self, texts: Sequence[str], rules: PrivacyRules) -> list[list[Detection]]:
        """Detections for each text, sorted by start, non-overlapping.

        Raises InvalidInput when a text exceeds ``privacy.max_text_chars`` or a custom
        recognizer's regex does not compile. Messages never quote the text.
        """
        return self.analyze_groups([texts], rules)[0]

    def analyze_groups(self, groups: Sequence[Sequence[str]], rules: PrivacyRules) -> list[list[list[Detection]]]:
        """:meth:`analyze` for several independent requests under the same rules.

        All texts share one spaCy pass (the expensive part, and much cheaper per text in
        a batch); what is learned inside a request (a name seen once is a name in every
        message) stays inside that group.
        """
        limit = self._settings.max_text_chars
        for group in groups:
            for i, text in enumerate(group):
                if len(text) > limit:
                    raise InvalidInput(f"text {i} has {len(text)} characters; the limit is {limit}")
        flat = [text for group in groups for text in group]
        if not flat:
            return [[] for _ in groups]
        custom = self._custom.get(rules)
        wanted = set(rules.detect) if rules.detect is not None else self._supported | entity_types(custom)
        wanted &= self._supported | entity_types(custom)
        allowed = {a.strip().casefold() for a in rules.allow_list}

        with self._nlp_lock:
            docs = list(self._nlp.pipe(flat, batch_size=_PIPE_BATCH))
        out: list[list[list[Detection]]] = []
        position = 0
        for group in groups:
            group_docs = docs[position : position + len(group)]
            position += len(group)
            candidates = [
                self._recognize(text, doc, wanted, custom, rules, allowed)
                for text, doc in zip(group, group_docs, strict=True)
            ]
            if "PERSON" in wanted:
                for text, found in zip(group, candidates, strict=True):
                    _names_from_emails(text, found, allowed)
                _propagate_names(group, candidates, allowed)
            out.append([_resolve(c) for c in candidates])
        return out

    def _recognize(
        self,
        text: str,
        doc: Doc,
        wanted: set[str],
        custom: list[EntityRecognizer],
        rules: PrivacyRules,
        allowed: set[str],
    ) -> list[Detection]:
        entities = sorted(e for e in wanted if (gate := GATES.get(e)) is None or gate(text))
        if not entities or not text.strip():
            return []
        artifacts = self._engine.artifacts(doc)
        # Phone numbers come after the others (see _phones); a tenant's own recognizer
        # for the type still runs inside the analyzer.
        others = [e for e in entities if e != _PHONE or e in entity_types(custom)]
        # An empty entity list would mean "every entity" to Presidio.
        raw = (
            self._analyzer.analyze(
                text=text,
                language=LANGUAGE,
                entities=others,
                nlp_artifacts=artifacts,
                ad_hoc_recognizers=custom or None,
                score_threshold=0.0,
            )
            if others
            else []
        )
        found = [
            Detection(r.start, r.end, r.entity_type, round(float(r.score), 4))
            for r in raw
            if _keep(r, text, rules, allowed)
        ]
        if _PHONE in entities:
            found += self._phones(text, found, artifacts, rules, allowed)
        return found

    def _phones(
        self, text: str, found: list[Detection], artifacts: NlpArtifacts, rules: PrivacyRules, allowed: set[str]
    ) -> list[Detection]:
        """Phone numbers, looked for only where no stronger format already claimed the
        digits: a card, IBAN or SSN would win the overlap anyway, and libphonenumber
        parsing their digit groups in every region was most of the analysis time."""
        searched = text
        for d in found:
            if _tier(d.entity_type) > _tier(_PHONE):
                searched = searched[: d.start] + " " * (d.end - d.start) + searched[d.end :]
        if not FIVE_DIGITS(searched):
            return []
        results = self._phone.find(text, searched)
        if results:
            enhancer = self._analyzer.context_aware_enhancer
            results = enhancer.enhance_using_context(text, results, artifacts, [self._phone])
        return [
            Detection(r.start, r.end, r.entity_type, round(float(r.score), 4))
            for r in results
            if _keep(r, text, rules, allowed)
        ]


def _keep(r: RecognizerResult, text: str, rules: PrivacyRules, allowed: set[str]) -> bool:
    rule = rules.entities.get(r.entity_type)
    threshold = rule.min_score if rule is not None and rule.min_score is not None else rules.score_threshold
    if r.score < threshold or r.end <= r.start:
        return False
    return not (allowed and text[r.start : r.end].strip().casefold() in allowed)


def _priority(d: Detection) -> tuple[int, float, int, str, int]:
    """Higher wins: tier, then score, then longer, then type name, then earlier."""
    return (_tier(d.entity_type), d.score, d.end - d.start, d.entity_type, -d.start)


_PROPAGATED_SCORE = 0.9  # above NER guesses: the request itself already called this value a name
_WORDISH = re.compile(r"[^\W\d_]{3,}")


def _propagate_names(texts: Sequence[str], candidates: list[list[Detection]], allowed: set[str]) -> None:
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
            found.extend(Detection(m.start(), m.end(), "PERSON", _PROPAGATED_SCORE) for m in pattern.finditer(text))


def _mentioned_again(texts: Sequence[str], candidates: list[list[Detection]], values: set[str]) -> bool:
    """Whether some name or name part occurs more often than the spans already found hold it.

    A cheap case-insensitive count first: most requests name someone once, and building
    and running the propagation regexes (a fresh pattern per request) is then waste. A
    substring hit inside a longer word only means the exact regexes run.
    """
    folded = [" ".join(t.split()).casefold() for t in texts]
    found = [
        " ".join(text[d.start : d.end].split()).casefold()
        for text, spans in zip(texts, candidates, strict=True)
        for d in spans
        if d.entity_type == "PERSON"
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


def _names_from_emails(text: str, found: list[Detection], allowed: set[str]) -> None:
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
                    found.append(Detection(start, end, "PERSON", _EMAIL_NAME_SCORE))


def _overlaps(run: list[re.Match[str]], d: Detection) -> bool:
    return run[0].start() < d.end and d.start < run[-1].end()


def _resolve(detections: list[Detection]) -> list[Detection]:
    """Overlaps: the highest-priority span keeps its characters, losers are dropped.
    Adjacent or overlapping spans of the same type merge into one, so a value is never
    transformed in pieces ("<PERSON><PERSON>")."""
    candidates = sorted(set(detections))
    # Same-type spans that touch or overlap become one span with the best score.
    merged: list[Detection] = []
    for by_type in sorted({d.entity_type for d in candidates}):
        current: Detection | None = None
        for d in (c for c in candidates if c.entity_type == by_type):
            if current is not None and d.start <= current.end:
                current = Detection(current.start, max(current.end, d.end), by_type, max(current.score, d.score))
            else:
                if current is not None:
                    merged.append(current)
                current = d
        if current is not None:
            merged.append(current)
    chosen: list[Detection] = []
    for d in sorted(merged, key=_priority, reverse=True):
        if all(d.end <= c.start or d.start >= c.end for c in chosen):
            chosen.append(d)
    return sorted(chosen)
