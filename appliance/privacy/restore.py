"""De-anonymization of model output: ``<PERSON_1>`` back to the original, for the caller.

Only tokens the vault knows *in this scope* are replaced. Anything else that merely looks
like a token (a model inventing ``<PERSON_7>``, a user pasting another conversation's
token, a hash tag) stays exactly as it is, so nothing can be fished out of the vault by
writing tokens into a prompt of another scope.

Streaming: a token can arrive split across chunks (``"... <PERS"`` + ``"ON_1> said"``).
:class:`StreamRestorer` holds back only a tail that could still become a token (at most
76 characters, from the last ``<``) and releases everything else at once, so latency is
unaffected for text without tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from appliance.privacy.vault import TOKEN_RE

# tokens -> originals for those known in the scope (unknown ones absent)
Lookup = Callable[[Iterable[str]], Mapping[str, str]]

_MAX_TOKEN = 1 + 64 + 1 + 9 + 1  # "<" TYPE "_" digits ">"
_PARTIAL = re.compile(r"<(?:[A-Z][A-Z0-9_]{0,73})?")


def restore(text: str, lookup: Lookup, known: dict[str, str] | None = None) -> tuple[str, int]:
    """``text`` with known tokens replaced, and how many were replaced.

    ``known`` is a cache the caller may keep across calls (the stream restorer does), so
    each token is looked up once.
    """
    found = {m.group(0) for m in TOKEN_RE.finditer(text)}
    if not found:
        return text, 0
    cache = known if known is not None else {}
    missing = found - cache.keys()
    if missing:
        resolved = lookup(sorted(missing))
        for tok in missing:
            cache[tok] = resolved.get(tok, tok)  # unknown: itself, and not asked again
    count = 0

    def swap(m: re.Match[str]) -> str:
        nonlocal count
        original = cache.get(m.group(0), m.group(0))
        count += original != m.group(0)
        return original

    return TOKEN_RE.sub(swap, text), count


def _hold_from(buffer: str) -> int:
    """Index where a possible partial token at the end of ``buffer`` starts (len if none)."""
    start = buffer.rfind("<", max(0, len(buffer) - _MAX_TOKEN))
    if start == -1 or ">" in buffer[start:]:
        return len(buffer)
    return start if _PARTIAL.fullmatch(buffer, start) else len(buffer)


class StreamRestorer:
    """Feed chunks in order; each call returns what may be sent on now. Call
    :meth:`flush` at the end of the stream for whatever is still held."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._known: dict[str, str] = {}
        self._held = ""
        self.restored = 0

    def feed(self, chunk: str) -> str:
        buffer = self._held + chunk
        cut = _hold_from(buffer)
        ready, self._held = buffer[:cut], buffer[cut:]
        return self._restore(ready)

    def flush(self) -> str:
        ready, self._held = self._held, ""
        return self._restore(ready)

    def _restore(self, text: str) -> str:
        if not text:
            return ""
        out, n = restore(text, self._lookup, self._known)
        self.restored += n
        return out
