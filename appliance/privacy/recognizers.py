"""Which recognizers run: Presidio's predefined English set, our additions, and the
tenant's own (regexes with context words, deny lists) built from :class:`PrivacyRules`.

Also the cheap gates that let the detector skip recognizers that cannot match a text
(a text with no ``@`` holds no email address), which is most of the speed-up for chat
messages that contain no numbers at all.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import phonenumbers
import regex
from presidio_analyzer import (
    AnalysisExplanation,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    PhoneRecognizer,
)

from appliance.errors import InvalidInput
from appliance.privacy.engine import LANGUAGE
from appliance.privacy.rules import CustomRecognizer, PrivacyRules

# Regions whose *national* formats are recognised; numbers written with a country code
# (+41 ..., 0041 ...) are found for every country whatever this list says. Presidio's
# default list holds "UK" and "FE", which are not region codes, so we spell our own.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR", "AU", "IE", "NL", "CH", "AT", "ES", "IT")
_SAME_PLAN_AS_US = frozenset({"CA"})  # the North American Numbering Plan: one pass finds both
# Regions where a number written without its country code starts with the trunk prefix 0
# ("030 1234567", "020 7946 0000"). A short digit run without it (six or seven digits) is a
# ticket or order number that happens to be a valid local number there ("Ticket 404777" is
# one in Hamburg) unless a phone word stands nearby ("call me on 413 4270"): it scores as a
# merely possible number. Longer runs are kept, as numbers of other countries parse there too.
# Brazil and India are left out: people there often drop the 0 (mobiles above all).
_TRUNK_ZERO = frozenset({"GB", "DE", "FR", "IL", "AU", "IE", "NL", "CH", "AT"})
_SHORT_NATIONAL = 7
# A phone word shortly before a number ("call me on 413 4270"). Presidio's context words
# miss these verbs: its enhancer reads only non-stop-words, and spaCy lists "call" as one.
_PHONE_CUE_BEFORE = regex.compile(
    r"\b(?:call|calling|ring|phone|mobile|cell|tel|telephone|fax|reach|dial|text|sms|whatsapp)\b[^\n\d]{0,16}$",
    regex.IGNORECASE,
)
_NO_REGION = "ZZ"  # libphonenumber's unknown region: only numbers with a country code parse

_DIGIT = regex.compile(r"\d")
_CUE_NAME_CONTEXT = ["name", "called", "regards", "thanks", "cheers", "signed"]


def _digits_at_least(n: int) -> Callable[[str], bool]:
    def gate(text: str) -> bool:
        return any(i + 1 >= n for i, _ in enumerate(_DIGIT.finditer(text)))

    return gate


_ANY_DIGIT = _digits_at_least(1)
FIVE_DIGITS = _digits_at_least(5)
_SPELLED_AT = regex.compile(r"(?i)[\[({<]\s*at\s*[\])}>]|\sdot\s")
_DOT_LETTERS = regex.compile(r"\.[A-Za-z]{2}")  # every URL pattern needs a dot before its top-level domain

# Entity types found *only* by pattern recognizers that need these characters. A type a
# NER model also reports (DATE_TIME, PERSON, ...) is never gated. Thresholds are the
# fewest digits any accepted format of that type holds, rounded down generously.
GATES: dict[str, Callable[[str], bool]] = {
    "EMAIL_ADDRESS": lambda t: "@" in t or _SPELLED_AT.search(t) is not None,
    "URL": lambda t: _DOT_LETTERS.search(t) is not None,
    "CREDIT_CARD": _digits_at_least(12),
    "US_SSN": _digits_at_least(9),
    "US_ITIN": _digits_at_least(9),
    "US_BANK_NUMBER": _digits_at_least(8),
    "US_PASSPORT": _digits_at_least(8),
    "UK_NHS": _digits_at_least(10),
    "PHONE_NUMBER": FIVE_DIGITS,
    "IBAN_CODE": _digits_at_least(4),
    "IP_ADDRESS": lambda t: ":" in t or _digits_at_least(4)(t),
    "US_DRIVER_LICENSE": _ANY_DIGIT,
    "MEDICAL_LICENSE": _ANY_DIGIT,
    "CRYPTO": _ANY_DIGIT,
}


def cue_name_recognizer() -> PatternRecognizer:
    """Names after phrases that announce one ("my name is", "Customer:", "Hi Anna,").

    spaCy's small English model misses many names, above all names typed in lowercase in
    chats; after these cues a following one- or two-word name is very likely. Matches
    start after the cue (variable-length look-behind, which the ``regex`` module Presidio
    uses supports), so only the name is replaced. Words that often follow the cues and
    are not names are excluded; greetings count only when the name ends the phrase
    ("Hi Anna," but not "hi there" or "hey can you").
    """
    not_a_name = (
        r"(?!(?:a|an|the|not|just|very|so|really|also|still|from|in|at|on|with|about|for|to|my|your|our"
        r"|going|trying|looking|calling|writing|here|there|it|that|this|is|was|me|him|her|us|them|you|all"
        r"|sorry|happy|glad|sure|fine|ok|okay|and|or|but|because|regarding|urgent|important|team|everyone"
        r"|guys|folks|support|sir|madam|again|everybody|please|thank|thanks|good|morning|afternoon|evening"
        r"|back|later|tomorrow|today|tonight|now|asap|anytime|when|if|as|by|once)\b)"
    )
    word = r"[^\W\d_][\w'\u2019-]{1,30}"
    name = not_a_name + word + r"(?:[ \t]+" + not_a_name + word + r")?\b"
    statement = (
        r"(?<=\b(?:my name is|my name's|name is|i am called|this is|call me|ask for|speak to|talk to"
        r"|signed|regards,?|cheers,?|thanks,?|best,?)\s+)"
    )
    label = (
        r"(?<=^[ \t]*(?:name|full name|customer|reporter|contact|account holder|account owner|patient)[ \t]*:[ \t]*)"
    )
    greeting = r"(?<=\b(?:dear|hi|hello|hey)[ \t]+)"
    here = r"(?<=\b(?:it's|it\u2019s|it is)[ \t]+)"
    return PatternRecognizer(
        supported_entity="PERSON",
        name="CueNameRecognizer",
        supported_language=LANGUAGE,
        patterns=[
            Pattern("name after statement", statement + name, 0.5),
            Pattern("name after label", label + name, 0.6),
            Pattern("name after greeting", greeting + name + r"(?=[ \t]*(?:[,!:\n]|$))", 0.5),
            Pattern("name before 'here'", here + name + r"(?=[ \t]+here\b)", 0.5),
        ],
        context=_CUE_NAME_CONTEXT,
    )


# The last label of an address's domain: letters of any script, or an IDN's punycode. Never
# digits: "pkg@1.2.3", "node@18.x" and Outlook's "image001.png@01DA1234.5678ABCD" are no mail.
_TOP_LABEL = regex.compile(r"[^\W\d_]{2,63}|xn--[a-z0-9-]{2,59}", regex.IGNORECASE)


class EmailAddressRecognizer(EmailRecognizer):
    """Presidio's e-mail pattern with the domain judged by its shape, not the public suffix list.

    Presidio keeps a match only when tldextract finds a registrable domain in it. That drops
    two kinds of real, everyday addresses: those directly under a public suffix (the NHS's
    "@nhs.uk", "@police.uk", governments' "@gov.ng" or "@gov.sa", universities' "@edu.sg")
    and those on the private domains of the networks the appliance is installed in
    ("@corp.local", "@ad.example.internal", "@mail.corp", "@office.lan"). An address names a
    mailbox wherever it is delivered, so any dotted domain whose last label is a word counts.
    """

    def __init__(self) -> None:
        super().__init__(supported_language=LANGUAGE, name="EmailRecognizer")

    def validate_result(self, pattern_text: str) -> bool:
        top_label = pattern_text.rpartition("@")[2].rpartition(".")[2]
        return _TOP_LABEL.fullmatch(top_label) is not None


def spelled_email_recognizer() -> PatternRecognizer:
    """Addresses written out to dodge scrapers: "ann [at] example [dot] org", "ann at
    example dot org", "ann(at)example.org". A model reads them as addresses, so they are
    addresses. "at" without brackets counts only together with a spelled "dot" before the
    top-level domain, so "meet Ann at home" stays untouched."""
    label = r"[\w-]+"
    bracket_at = r"\s*[\[({<]\s*at\s*[\])}>]\s*"
    spelled_dot = r"(?:\s*[\[({<]\s*dot\s*[\])}>]\s*|\s+dot\s+)"
    local = r"(?<![\w.+-])[\w.+-]*\w"
    return PatternRecognizer(
        supported_entity="EMAIL_ADDRESS",
        name="SpelledEmailRecognizer",
        supported_language=LANGUAGE,
        patterns=[
            Pattern(
                "spelled at and dot",
                rf"(?i){local}(?:{bracket_at}|\s+at\s+){label}(?:(?:{spelled_dot}|\.){label})*{spelled_dot}[a-z]{{2,}}\b",
                0.6,
            ),
            Pattern("bracketed at", rf"(?i){local}{bracket_at}{label}(?:\.{label})*\.[a-z]{{2,}}\b", 0.6),
        ],
    )


def _glued(text: str, start: int, end: int) -> bool:
    """A letter right before or after, except an extension marker ("555-0100x12", "ext")."""
    before = start > 0 and text[start - 1].isalpha()
    after = end < len(text) and text[end].isalpha() and text[end] not in "xXeE"
    return before or after


_DATE_SHAPED = regex.compile(r"(\d{1,4})([./-])(\d{1,2})\2(\d{2,4})")


def _is_date(raw: str) -> bool:
    """A calendar date ("2025-02-11", "18.03.2024", "03/11/2024"): libphonenumber takes
    eight digits with separators for a possible local number in several regions."""
    shaped = _DATE_SHAPED.fullmatch(raw.strip())
    if shaped is None:
        return False
    first, _, middle, last = shaped.groups()
    if len(first) == 4:
        orders = [(first, middle, last)]  # year first
    elif len(last) == 4:
        orders = [(last, middle, first), (last, first, middle)]  # day or month first
    else:
        return False
    for year, month, day in orders:
        try:
            datetime.date(int(year), int(month), int(day))
        except ValueError:
            continue
        return True
    return False


# Digit groups joined by what people write between them ("(415) 555-2671", "030 / 1234 567",
# "555-2671 ext. 12").
_DIGIT_RUN = regex.compile(r"\d(?:(?:[\s\-./()]{0,3}|[ \t]*(?i:x|ext\.?|extension|\#)[ \t]*)\d)*")
_MIN_NATIONAL_DIGITS = 6  # fewer is a house number, a year or a zip code in every region we parse


def _phone_shaped_only(text: str) -> str | None:
    """``text`` with every digit run too short to be a national phone number blanked out
    (same length), or None when no run is long enough: each digit group left in costs a
    parse per region, and street numbers, years and zip codes are most of them."""
    pieces: list[str] = []
    position = 0
    kept = False
    for m in _DIGIT_RUN.finditer(text):
        if sum(c.isdigit() for c in m.group()) >= _MIN_NATIONAL_DIGITS:
            kept = True
            continue
        pieces += [text[position : m.start()], " " * (m.end() - m.start())]
        position = m.end()
    if not kept:
        return None
    pieces.append(text[position:])
    return "".join(pieces)


class PhoneNumberRecognizer(PhoneRecognizer):
    """Presidio's phone recognizer, one libphonenumber pass per region instead of two.

    Numbers libphonenumber knows to be valid score 0.4 as in Presidio. Numbers that only
    have a possible length score 0.1, below the default threshold, and a context word
    nearby ("call", "mobile", "fax", ...) lifts them over it: libphonenumber's data lags
    reality (new ranges, private networks; a typo of a real number is still that
    person's number), while a bare nine-digit order number stays untouched.
    """

    POSSIBLE_SCORE = 0.1
    CONTEXT = [*PhoneRecognizer.CONTEXT, "tel", "fax", "reach", "office", "desk", "whatsapp", "sms", "text", "dial"]

    def __init__(self) -> None:
        super().__init__(
            context=self.CONTEXT,
            supported_language=LANGUAGE,
            supported_regions=PHONE_REGIONS,
            leniency=phonenumbers.Leniency.POSSIBLE,
            name="PhoneNumberRecognizer",
        )

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        return self.find(text, text)

    def find(self, text: str, searched: str) -> list[RecognizerResult]:
        """Numbers in ``searched``: ``text`` with spans already taken by stronger formats
        (card, IBAN, SSN, ...) blanked out, same length, so offsets hold for ``text``.

        Parsing is the cost, once per candidate per region. A number written with its
        country code ("+49 ...") parses the same in every region: find those once with
        no region, blank them out too, and run the national passes only over what is
        left (often nothing). Canada shares the US numbering plan: the US pass covers it.
        """
        best: dict[tuple[int, int], float] = {}
        self._collect(text, searched, _NO_REGION, best)
        rest = searched
        for start, end in best:
            rest = rest[:start] + " " * (end - start) + rest[end:]
        national = _phone_shaped_only(rest)
        if national is not None:
            for region in self.supported_regions:
                if region not in _SAME_PLAN_AS_US:
                    self._collect(text, national, region, best)
        return [
            RecognizerResult(
                entity_type="PHONE_NUMBER",
                start=start,
                end=end,
                score=score,
                analysis_explanation=AnalysisExplanation(
                    recognizer="PhoneNumberRecognizer", original_score=score, textual_explanation="libphonenumber match"
                ),
                recognition_metadata={
                    RecognizerResult.RECOGNIZER_NAME_KEY: "PhoneNumberRecognizer",
                    RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                },
            )
            for (start, end), score in sorted(best.items())
        ]

    def _collect(self, text: str, searched: str, region: str, best: dict[tuple[int, int], float]) -> None:
        for match in phonenumbers.PhoneNumberMatcher(searched, region, leniency=phonenumbers.Leniency.POSSIBLE):
            if _glued(text, match.start, match.end):
                continue  # part of a word ("E123456"), as libphonenumber's VALID level rules
            if _is_date(match.raw_string):
                continue
            short_local = (
                region in _TRUNK_ZERO
                and sum(c.isdigit() for c in match.raw_string) <= _SHORT_NATIONAL
                and not match.raw_string.lstrip("( ").startswith("0")
            )
            valid = not short_local and phonenumbers.is_valid_number(match.number)
            if valid or _PHONE_CUE_BEFORE.search(text, max(0, match.start - 40), match.start):
                score = self.SCORE
            else:
                score = self.POSSIBLE_SCORE
            span = (match.start, match.end)
            best[span] = max(best.get(span, 0.0), score)


def wide_card_recognizer() -> CreditCardRecognizer:
    """Card numbers Presidio's pattern misses: Mastercard's 2-series (2221-2720, issued
    since 2017), 19-digit Visa and Maestro, 12- to 15-digit Maestro and UATP. Every match
    must still pass the Luhn check, which keeps random digit runs out."""
    grouped = r"\b(?:[1-6]\d{3}[- ]\d{4}[- ]\d{4}[- ]\d{4}(?:[- ]\d{1,3})?|3\d{3}[- ]\d{6}[- ]\d{5})\b"
    compact = r"(?<![+\d])\b[1-6]\d{11,18}\b"  # never after "+": that is a phone number
    return CreditCardRecognizer(
        patterns=[Pattern("card grouped", grouped, 0.3), Pattern("card compact", compact, 0.1)],
        supported_language=LANGUAGE,
        name="WideCreditCardRecognizer",
    )


class _SkipLanguageNotice(logging.Filter):
    """Presidio's predefined list also holds Spanish, Italian and Polish recognizers; an
    English registry skips each with a WARNING ("Recognizer not added to registry because
    language is not supported ..."), a dozen per start that no operator can act on, since
    the appliance is English-only by design (one NER model per process). Only that message
    is dropped, and only while the predefined set loads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Recognizer not added to registry because language is not supported")


@contextmanager
def _quiet_language_skips() -> Iterator[None]:
    presidio_log = logging.getLogger("presidio-analyzer")
    notice = _SkipLanguageNotice()
    presidio_log.addFilter(notice)
    try:
        yield
    finally:
        presidio_log.removeFilter(notice)


def build_registry(nlp_engine: NlpEngine) -> RecognizerRegistry:
    """Presidio's predefined English recognizers plus our card, e-mail and name additions.

    Phone numbers are not in it: the detector runs :class:`PhoneNumberRecognizer` after
    the others, over the text with their findings blanked out (see ``find``).
    """
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    with _quiet_language_skips():
        registry.load_predefined_recognizers(languages=[LANGUAGE], nlp_engine=nlp_engine)
    registry.remove_recognizer("PhoneRecognizer")
    registry.remove_recognizer("EmailRecognizer")
    registry.add_recognizer(EmailAddressRecognizer())
    # The predefined set's YAML gives the IBAN recognizer case-insensitive matching, so its
    # pattern runs on into the next word ("AT66 3272 ... 4889 please") and the checksum of
    # the longer string fails; the recognizer's own defaults match upper case only.
    registry.remove_recognizer("IbanRecognizer")
    registry.add_recognizer(IbanRecognizer(supported_language=LANGUAGE))
    registry.add_recognizer(wide_card_recognizer())
    registry.add_recognizer(cue_name_recognizer())
    registry.add_recognizer(spelled_email_recognizer())
    for recognizer in registry.recognizers:  # load now: lazy loading is not thread-safe
        if not recognizer.is_loaded:
            recognizer.load()
            recognizer.is_loaded = True
    return registry


def _custom(spec: CustomRecognizer) -> PatternRecognizer:
    if not spec.patterns and not spec.deny_list:
        raise InvalidInput(f"custom recognizer {spec.name!r} needs at least one pattern or deny_list entry")
    patterns = []
    for i, p in enumerate(spec.patterns):
        try:
            regex.compile(p.regex)
        except regex.error as exc:
            raise InvalidInput(f"custom recognizer {spec.name!r}: pattern {i} is not a valid regex ({exc})") from None
        patterns.append(Pattern(f"{spec.name}-{i}", p.regex, p.score))
    return PatternRecognizer(
        supported_entity=spec.entity_type,
        name=spec.name,
        supported_language=LANGUAGE,
        patterns=patterns,
        deny_list=list(spec.deny_list),
        context=list(spec.context),
    )


class CustomRecognizerCache:
    """Builds the tenant's recognizers once per distinct rules document (compiling regexes
    on every request would cost more than running them). Bounded LRU, thread-safe."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._items: OrderedDict[str, list[EntityRecognizer]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, rules: PrivacyRules) -> list[EntityRecognizer]:
        if not rules.custom_recognizers:
            return []
        key = "\x00".join(r.model_dump_json() for r in rules.custom_recognizers)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        built: list[EntityRecognizer] = [_custom(spec) for spec in rules.custom_recognizers]
        with self._lock:
            self._items[key] = built
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return built


def entity_types(recognizers: Sequence[EntityRecognizer]) -> set[str]:
    return {e for r in recognizers for e in r.supported_entities}
