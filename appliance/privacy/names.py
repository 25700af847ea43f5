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

from appliance.privacy.spans import Detection

_PROPAGATED_SCORE = 0.9  # above NER guesses: the request itself already called this value a name
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
                    found.append(Detection(start, end, "PERSON", _EMAIL_NAME_SCORE))


def _overlaps(run: list[re.Match[str]], d: Detection) -> bool:
    return run[0].start() < d.end and d.start < run[-1].end()
