"""What a detection is: a typed span of the caller's text, never the text itself."""

from __future__ import annotations

from dataclasses import dataclass

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
