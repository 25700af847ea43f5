"""What a detection is: a typed span of the caller's text, never the text itself."""

from __future__ import annotations

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
