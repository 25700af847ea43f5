"""What a detection is: a typed span of the caller's text, never the text itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

NER_TYPES = frozenset({"PERSON", "LOCATION", "NRP", "DATE_TIME", "ORGANIZATION"})
"""The entity types only the statistical NER model finds (guesses, not formats)."""


@dataclass(frozen=True, order=True)
class Detection:
    """One entity in one text: ``text[start:end]`` is the value. Carries no value itself,
    so a Detection can be logged or audited without leaking what it points at."""

    start: int
    end: int
    entity_type: str
    score: float
    recognizer: str = field(default="", compare=False)
    """What found it (a Presidio recognizer's name, or one of the name rules); not part of
    equality or order, so the same span found twice is still one detection."""


def token_around(text: str, start: int, end: int, edge: Callable[[str], bool] = str.isspace) -> str:
    """The run of characters holding ``text[start:end]`` between the nearest ``edge``
    characters on either side (by default, the whitespace-delimited word)."""
    lo, hi = start, end
    while lo > 0 and not edge(text[lo - 1]):
        lo -= 1
    while hi < len(text) and not edge(text[hi]):
        hi += 1
    return text[lo:hi]
