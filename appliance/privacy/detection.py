"""The detector: many texts, one pass through spaCy, then Presidio's recognizers per text,
then one deterministic answer per character.

Built once per process (loading the NER model takes seconds) and shared by every
request thread. One analysis runs at a time, under a lock: spaCy does not promise that
one pipeline may be used from several threads at once, and analyses run in spaCy memory
zones so the values they saw do not stay in the model's vocabulary.

Offsets are Python string indices (Unicode code points), the same as spaCy's and
Presidio's; callers slice the text they sent with them. Texts are never normalized, so
offsets stay true to the caller's text whatever it contains (emoji, CJK, combining marks).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import regex
import torch
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from spacy.language import Language
from spacy.tokens import Doc

from appliance.config import PrivacySettings
from appliance.errors import InvalidInput
from appliance.privacy.engine import LANGUAGE, NerOnlyNlpEngine, build_analyzer, load_ner_pipeline, make_nlp_engine
from appliance.privacy.gazetteers import brand_kind, judge_gazetteers
from appliance.privacy.name_bounds import bare_name, widen_names
from appliance.privacy.name_lexicon import honorific_before, is_name_word, judge_names
from appliance.privacy.name_model import NAME_MODEL_DIR, NameModel, NameReading, sentence_start
from appliance.privacy.names import (
    drop_non_names,
    names_a_company,
    names_from_cues,
    names_near_emails,
    propagate_names,
)
from appliance.privacy.recognizers import (
    FIVE_DIGITS,
    GATES,
    CustomRecognizerCache,
    PhoneNumberRecognizer,
    build_registry,
    entity_types,
)
from appliance.privacy.rules import PrivacyRules
from appliance.privacy.spans import NER_TYPES, Detection, token_around
from appliance.privacy.views import TextView, view_of

__all__ = ["Detection", "Detector"]

# Overlap tiers, highest first: formats with real structure or strong checksums (email,
# card, IBAN, IP, SSN, ...); phone numbers, which are any digit run of a possible length
# and so also match IP addresses and card numbers; bare digit-run identifiers whose
# checks pass by chance (one random 10-digit run in 11 is a "valid" NHS number, and a US
# phone number has the same 3-3-4 shape); and what a statistical model guessed (a phone
# number also tagged DATE by NER). Score decides only within a tier.
_PHONE = "PHONE_NUMBER"
_WEAK_TYPES = frozenset({"UK_NHS", "US_BANK_NUMBER", "US_DRIVER_LICENSE", "US_PASSPORT", "US_ITIN", "MEDICAL_LICENSE"})


def _tier(entity_type: str) -> int:
    if entity_type in NER_TYPES:
        return 0
    if entity_type in _WEAK_TYPES:
        return 1
    return 2 if entity_type == "PHONE_NUMBER" else 3


_PIPE_BATCH = 64
_ZONE_CALLS = 4096
# spaCy's PERSON guesses that the name model gives less than this are dropped: the small
# spaCy model calls many capitalized words people ("Lyon" in "the Lyon office"), and the
# name model, which read the whole sentence with its casing, is the better judge.
_SPACY_PERSON_VETO = 0.05
# The same judge for the name rules (cue phrases, speaker labels, lists, repeated mentions):
# a rule's span the model gives less than this is dropped. The rules exist for what the
# model misses in one text (a name repeated in lower case, a name beside its address), so
# the bar is low: only spans the model is confident are ordinary words go.
_RULE_PERSON_VETO = 0.05
# A spaCy guess of one word that is both a name and an English word ("Frank", "Grace", "Bill")
# needs more of the name model when it opens a sentence: its capital is the sentence's, so
# spaCy's casing evidence is void there, while the name model read the words after it
# ("Frank feedback from the pilot" against "Frank said the pilot").
_SENTENCE_START_VETO = 0.7
_NO_READING = NameReading([], [])


def load_name_model(settings: PrivacySettings) -> NameModel | None:
    if settings.patterns_only or settings.name_model == "off":
        return None
    return NameModel(NAME_MODEL_DIR if settings.name_model == "builtin" else Path(settings.name_model))


class Detector:
    """Thread-safe PII detector over the configured NER pipeline and pattern recognizers."""

    def __init__(self, settings: PrivacySettings) -> None:
        self._settings = settings
        self._nlp: Language = load_ner_pipeline(settings)
        self._engine: NerOnlyNlpEngine = make_nlp_engine(self._nlp, settings)
        self._analyzer: AnalyzerEngine = build_analyzer(self._engine, build_registry(self._engine))
        self._names = load_name_model(settings)
        # One intra-op thread for it (a per-thread setting in OpenMP): spaCy has the other core.
        self._name_thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="name-model", initializer=torch.set_num_threads, initargs=(1,)
        )
        self._phone = PhoneNumberRecognizer()
        self._supported = set(self._analyzer.get_supported_entities(LANGUAGE)) | {_PHONE}
        self._custom = CustomRecognizerCache()
        self._nlp_lock = threading.Lock()
        self._zone = ExitStack()
        self._zone_calls = _ZONE_CALLS  # the first call opens a zone
        self._ner_texts = 0
        # First use compiles every recognizer's regexes and runs each model once
        # (about half a second); pay it at start-up, not in a caller's request.
        self.analyze(["Warm-up: a.b@example.org, +1 212 555 0100, 203.0.113.1, Ann Lee in Paris."], PrivacyRules())

    @property
    def supported_entities(self) -> frozenset[str]:
        return frozenset(self._supported)

    @property
    def ner_texts(self) -> int:
        """Texts the NER model has read so far: policies that detect no NER type skip it,
        which makes their detection several times cheaper."""
        return self._ner_texts

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
        views = [[view_of(text) for text in group] for group in groups]
        flat = [view.text for group in views for view in group]
        if not flat:
            return [[] for _ in groups]
        custom = self._custom.get(rules)
        wanted = set(rules.detect) if rules.detect is not None else self._supported | entity_types(custom)
        wanted &= self._supported | entity_types(custom)
        allowed = {a.strip().casefold() for a in rules.allow_list}

        with self._nlp_lock:
            self._zone_for_next_call()
            # The name model reads the texts on its own thread while spaCy reads them here:
            # both spend their time in native code that releases the GIL, so on two cores a
            # request waits for the slower of the two, not for their sum.
            names = (
                self._name_thread.submit(self._names.read, flat)
                if self._names is not None and "PERSON" in wanted
                else None
            )
            try:
                if wanted & NER_TYPES:
                    docs = list(self._nlp.pipe(flat, batch_size=_PIPE_BATCH))
                    self._ner_texts += len(flat)
                else:  # tokens for context words only: the policy asks for no type NER finds
                    docs = [self._nlp.make_doc(text) for text in flat]
                # The recognizers need no name reading, so they run while the name model may
                # still be reading: a lone short text waited for it here first (its pass is
                # the longer of the two), then ran them.
                recognized = [
                    self._recognize(text, doc, wanted, custom, rules, allowed)
                    for text, doc in zip(flat, docs, strict=True)
                ]
            finally:
                readings = names.result() if names is not None else [_NO_READING] * len(flat)
            out: list[list[list[Detection]]] = []
            position = 0
            for group_views in views:
                end = position + len(group_views)
                found = self._group(
                    [v.text for v in group_views],
                    docs[position:end],
                    recognized[position:end],
                    readings[position:end],
                    wanted,
                    rules,
                    allowed,
                )
                position = end
                out.append([_in_original(view, spans) for view, spans in zip(group_views, found, strict=True)])
        return out

    def forget(self) -> None:
        """Drops every token string analyses added to the model's vocabulary so far."""
        with self._nlp_lock:
            self._zone.close()
            self._zone_calls = _ZONE_CALLS

    def _zone_for_next_call(self) -> None:
        """Analyses run inside a spaCy memory zone, renewed every ``_ZONE_CALLS`` calls.

        spaCy keeps every token string it has seen (names, addresses, numbers) in the
        pipeline's vocabulary for the life of the process: a long-running server would
        grow without bound and hold callers' values. Strings added inside a zone are
        dropped when it closes. One zone per call cost a tenth of the analysis time
        (every word's lexeme rebuilt each call), so a zone spans a few thousand calls (tens of MB of strings at most).
        Docs never outlive a call, and calls hold the lock, so none outlives its zone.
        """
        if self._zone_calls >= _ZONE_CALLS:
            self._zone.close()
            self._zone = ExitStack()
            self._zone.enter_context(self._nlp.memory_zone())
            self._zone_calls = 0
        self._zone_calls += 1

    def _group(
        self,
        group: Sequence[str],
        docs: Sequence[Doc],
        recognized: Sequence[list[Detection]],
        readings: Sequence[NameReading],
        wanted: set[str],
        rules: PrivacyRules,
        allowed: set[str],
    ) -> list[list[Detection]]:
        candidates = [
            [d for d in found if not (reading.tokens and _vetoed(text, d, reading))]
            for text, found, reading in zip(group, recognized, readings, strict=True)
        ]
        if "PERSON" not in wanted:
            return [_resolve(c) for c in candidates]
        for text, doc, reading, found in zip(group, docs, readings, candidates, strict=True):
            found.extend(_model_names(text, reading, found, rules, allowed))
            drop_non_names(text, found)
            names_near_emails(text, found, allowed)
            names_from_cues(text, doc, found, allowed)
            found[:] = [piece for d in found for piece in _cells(text, d)]
            judge_names(text, found, locations="LOCATION" in wanted)
            judge_gazetteers(text, found, locations="LOCATION" in wanted)
            found[:] = [d for d in found if d.entity_type != "PERSON" or _credible_name(text, d, reading)]
        # After the gate: only credible names spread, and a further mention of one is masked
        # however ordinary its words look where they stand ("the marta zyxkowski report").
        propagate_names(group, candidates, allowed)
        return [
            widen_names(text, _resolve(c), reading.probability)
            for text, c, reading in zip(group, candidates, readings, strict=True)
        ]

    def _recognize(
        self,
        text: str,
        doc: Doc,
        wanted: set[str],
        custom: list[EntityRecognizer],
        rules: PrivacyRules,
        allowed: set[str],
    ) -> list[Detection]:
        """What the pattern and NER recognizers find; the name model's vetoes come later."""
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
        guesses = [
            Detection(r.start, r.end, r.entity_type, round(float(r.score), 4), _recognizer(r))
            for r in raw
            if _keep(r, text, rules, allowed)
        ]
        found = [p for d in guesses for p in _cells(text, d)]
        if _PHONE in entities:  # a veto touches only spaCy's PERSON guesses, which never mask a phone number
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
            Detection(r.start, r.end, r.entity_type, round(float(r.score), 4), _recognizer(r))
            for r in results
            if _keep(r, text, rules, allowed)
        ]


def _vetoed(text: str, d: Detection, reading: NameReading) -> bool:
    """A spaCy PERSON guess the name model is sure is no name, or a name that is also an
    English word opening a sentence, which the model doubts: its capital is the sentence's,
    and the small spaCy model calls such words people ("Frank feedback from the pilot",
    "Grace periods were shortened", "Bill payment")."""
    if d.entity_type != "PERSON" or d.recognizer != "SpacyRecognizer":
        return False
    bar = _SENTENCE_START_VETO if _word_opening(text, d) else _SPACY_PERSON_VETO
    return reading.probability(d.start, d.end) < bar


def _word_opening(text: str, d: Detection) -> bool:
    """A one-word guess that opens a sentence and is also an English word."""
    word = text[d.start : d.end].strip()
    return sentence_start(text, d.start) and is_name_word(word)


_CELL_BREAK = regex.compile(r"\s*[\n\r\t\v\f]\s*")


def _cells(text: str, d: Detection) -> list[Detection]:
    """A PERSON guess cut at line breaks and tabs: a name never runs on into the next line or
    table cell, which is often a label ("Jana Novak\nReviewers:") or another value. Each
    piece is then judged on its own."""
    if d.entity_type != "PERSON" or not _CELL_BREAK.search(text, d.start, d.end):
        return [d]
    pieces: list[Detection] = []
    start = d.start
    for m in _CELL_BREAK.finditer(text, d.start, d.end):
        if m.start() > start:
            pieces.append(Detection(start, m.start(), d.entity_type, d.score, d.recognizer))
        start = m.end()
    if start < d.end:
        pieces.append(Detection(start, d.end, d.entity_type, d.score, d.recognizer))
    return pieces


def _credible_name(text: str, d: Detection, reading: NameReading) -> bool:
    """A lone letter is no name (an initial alone leaks nothing, and "M:" or "Q3" are
    labels); a rule's span the name model is sure is an ordinary word is dropped."""
    if sum(c.isalpha() for c in text[d.start : d.end]) < 2:
        return False
    if d.recognizer == "NameModel" or not reading.tokens or _titled_person(text, d):
        return True
    return reading.probability(d.start, d.end) >= _RULE_PERSON_VETO


def _titled_person(text: str, d: Detection) -> bool:
    """A name after a title ("Dr. Summerfield": the model may read the title as the name and
    miss the name), unless title and name are a brand ("Dr. Oetker")."""
    title = honorific_before(text, d.start)
    return title is not None and brand_kind(text[title : d.end]) is None


def _model_names(
    text: str, reading: NameReading, found: list[Detection], rules: PrivacyRules, allowed: set[str]
) -> list[Detection]:
    """The name model's spans, except over a value of a structured type (an e-mail address
    spells a name, but it is replaced as an address), values the policy allows (titles
    aside) and a company's name ("Acme Holdings")."""
    rule = rules.entities.get("PERSON")
    threshold = rule.min_score if rule is not None and rule.min_score is not None else rules.score_threshold
    structured = [d for d in found if d.entity_type not in NER_TYPES]
    return [
        Detection(start, end, "PERSON", score, "NameModel")
        for start, end, score in reading.spans
        if score >= threshold
        and bare_name(text[start:end]).casefold() not in allowed
        and not names_a_company(text, end)
        and not any(d.start < end and start < d.end for d in structured)
        and not _inside_address(text, start, end)
    ]


def _address_edge(c: str) -> bool:
    return c.isspace() or c in _FIELD_SEPARATORS


# Characters that end an address's token: a CSV row or a JSON record puts the name and the
# e-mail address side by side with no space ("17,Anna Berg,anna.berg@example.com").
_FIELD_SEPARATORS = frozenset(',;|"<>()[]{}')


def _inside_address(text: str, start: int, end: int) -> bool:
    """Part of an e-mail address or URL: the whole address is the value (replaced as one
    when it is detected, kept whole when the policy allows it)."""
    token = token_around(text, start, end, _address_edge)
    return "@" in token or "://" in token or token.casefold().startswith("www.")


def _in_original(view: TextView, found: list[Detection]) -> list[Detection]:
    if view.origin is None:
        return found
    return [Detection(*view.span(d.start, d.end), d.entity_type, d.score, d.recognizer) for d in found]


def _recognizer(r: RecognizerResult) -> str:
    return str((r.recognition_metadata or {}).get(RecognizerResult.RECOGNIZER_NAME_KEY) or "")


def _keep(r: RecognizerResult, text: str, rules: PrivacyRules, allowed: set[str]) -> bool:
    rule = rules.entities.get(r.entity_type)
    threshold = rule.min_score if rule is not None and rule.min_score is not None else rules.score_threshold
    if r.score < threshold or r.end <= r.start:
        return False
    return not (allowed and text[r.start : r.end].strip().casefold() in allowed)


def _priority(d: Detection) -> tuple[int, float, int, str, int]:
    """Higher wins: tier, then score, then longer, then type name, then earlier."""
    return (_tier(d.entity_type), d.score, d.end - d.start, d.entity_type, -d.start)


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
                best = current if current.score >= d.score else d
                current = Detection(current.start, max(current.end, d.end), by_type, best.score, best.recognizer)
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
