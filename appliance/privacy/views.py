"""What the detector reads: the caller's text with disguises taken off, and the way back.

A value can be hidden from pattern matching without hiding it from a language model: a
zero-width space inside an e-mail address (``ann\\u200b@example.org``), full-width digits
in a card number (U+FF14 for "4", ...), mathematical-bold letters in a name. Models
read through all of these. The detector therefore analyzes a *view* of each text: every
character replaced by its NFKC compatibility form and invisible format characters
dropped. Offsets found in the view map back to the caller's text, and a span there
covers the invisible characters inside it, so the whole disguised value is replaced.

Characters are normalized one at a time (never composed with their neighbours), so a
view character always comes from exactly one original character.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# Format characters that render as nothing: zero-width space/joiners, word joiner,
# invisible operators, BOM, soft hyphen, bidi marks.
_INVISIBLE = frozenset("\u00ad\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff")


@dataclass(frozen=True)
class TextView:
    text: str
    """What the detector reads."""
    origin: tuple[int, ...] | None
    """For each view character, the index of the original character it came from; None
    when the view is the original text."""

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of view characters ``[start, end)``."""
        if self.origin is None:
            return start, end
        return self.origin[start], self.origin[end - 1] + 1


def view_of(text: str) -> TextView:
    if text.isascii() or (unicodedata.is_normalized("NFKC", text) and not any(c in _INVISIBLE for c in text)):
        return TextView(text, None)
    chars: list[str] = []
    origin: list[int] = []
    for i, c in enumerate(text):
        if c in _INVISIBLE:
            continue
        normal = unicodedata.normalize("NFKC", c)
        chars.append(normal)
        origin.extend([i] * len(normal))
    view = "".join(chars)
    return TextView(text, None) if view == text else TextView(view, tuple(origin))
