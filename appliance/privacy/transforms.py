"""Applying the policy's action to each detection: redact, mask, replace, hash,
pseudonymize, block, keep.

Everything here works on code-point offsets from :mod:`appliance.privacy.detection`
and replaces right to left, so earlier offsets stay valid whatever the replacement's
length. Masking counts user-perceived characters (a base letter with its combining
marks is one), so "keep the last 2" never leaves a lone accent on a mask character.

Key material and the vault are handed in as callables: this module never touches the
database or a key store, which keeps it testable and keeps the crypto where it belongs.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from presidio_anonymizer.operators import Mask, Redact, Replace

from appliance.errors import Blocked
from appliance.privacy.detection import Detection
from appliance.privacy.rules import Action, EntityRule, PrivacyRules

HASH_TAG_HEX = 8

# (entity_type, value) pairs -> token for each, all of one request in one call.
Pseudonymize = Callable[[Sequence[tuple[str, str]]], Mapping[tuple[str, str], str]]


@dataclass(frozen=True)
class EntityFact:
    """What the audit trail may say about one entity type in a request: never values."""

    entity_type: str
    action: Action
    count: int


def hash_tag(key: bytes, entity_type: str, value: str) -> str:
    """``<TYPE_xxxxxxxx>``: HMAC-SHA256 under the tenant's key, so equal values get equal
    tags within the tenant, other tenants get unrelated tags, and without the key the
    tag cannot be reversed by hashing guesses. 32 bits: a correlation tag, not an id."""
    digest = hmac.new(key, f"{entity_type}\x00{value}".encode(), hashlib.sha256).hexdigest()
    return f"<{entity_type}_{digest[:HASH_TAG_HEX]}>"


def _clusters(value: str) -> list[str]:
    """Base characters with the combining marks, joiners and variation selectors after them."""
    out: list[str] = []
    for ch in value:
        joins = unicodedata.combining(ch) or ch in "\u200d\ufe0e\ufe0f" or (out and out[-1].endswith("\u200d"))
        if out and joins:
            out[-1] += ch
        else:
            out.append(ch)
    return out


def mask(value: str, keep_last: int, mask_char: str) -> str:
    clusters = _clusters(value)
    hidden = max(0, len(clusters) - keep_last)
    if len(clusters) == len(value):  # one code point per character: Presidio's operator fits
        return str(Mask().operate(value, {"masking_char": mask_char, "chars_to_mask": hidden, "from_end": False}))
    return mask_char * hidden + "".join(clusters[hidden:])


def blocked_types(detections: Sequence[Sequence[Detection]], rules: PrivacyRules) -> list[str]:
    return sorted(
        {d.entity_type for ds in detections for d in ds if rules.rule_for(d.entity_type).action is Action.BLOCK}
    )


@dataclass(frozen=True)
class Replacement:
    """One transformed span, in the *transformed* text's offsets (what Presidio's anonymizer
    reports as an item): ``text`` is what now stands there, never the original value."""

    start: int
    end: int
    entity_type: str
    text: str
    action: Action


@dataclass(frozen=True)
class Transformed:
    texts: list[str]
    facts: dict[str, EntityFact]
    replacements: list[list[Replacement]]
    """Per text, in order."""


def apply(
    texts: Sequence[str],
    detections: Sequence[Sequence[Detection]],
    rules: PrivacyRules,
    *,
    hash_key: Callable[[], bytes],
    pseudonymize: Pseudonymize,
) -> tuple[list[str], dict[str, EntityFact]]:
    """Transformed texts and per-type facts (see :func:`transform`)."""
    done = transform(texts, detections, rules, hash_key=hash_key, pseudonymize=pseudonymize)
    return done.texts, done.facts


def transform(
    texts: Sequence[str],
    detections: Sequence[Sequence[Detection]],
    rules: PrivacyRules,
    *,
    hash_key: Callable[[], bytes],
    pseudonymize: Pseudonymize,
) -> Transformed:
    """Transformed texts, per-type facts and where each replacement landed. Raises
    :class:`Blocked` (types only) before any key is fetched or any pseudonym stored, if a
    blocked type is present."""
    blocked = blocked_types(detections, rules)
    if blocked:
        raise Blocked(blocked)

    wanted = sorted(
        {
            (d.entity_type, text[d.start : d.end])
            for text, ds in zip(texts, detections, strict=True)
            for d in ds
            if rules.rule_for(d.entity_type).action is Action.PSEUDONYMIZE
        }
    )
    tokens = pseudonymize(wanted) if wanted else {}
    needs_hash = any(rules.rule_for(d.entity_type).action is Action.HASH for ds in detections for d in ds)
    key = hash_key() if needs_hash else b""

    counts: dict[str, int] = {}
    out: list[str] = []
    replaced: list[list[Replacement]] = []
    for text, ds in zip(texts, detections, strict=True):
        pieces: list[str] = []
        spans: list[Replacement] = []
        cursor = 0  # in the original text
        length = 0  # of the transformed text so far
        for d in sorted(ds, key=lambda d: (d.start, -d.end)):
            if d.start < cursor:  # detections are non-overlapping; guard against a caller's list
                continue
            rule = rules.rule_for(d.entity_type)
            new = _one(text[d.start : d.end], d.entity_type, rule, key, tokens)
            pieces += [text[cursor : d.start], new]
            length += d.start - cursor
            spans.append(Replacement(length, length + len(new), d.entity_type, new, rule.action))
            length += len(new)
            cursor = d.end
            counts[d.entity_type] = counts.get(d.entity_type, 0) + 1
        pieces.append(text[cursor:])
        out.append("".join(pieces))
        replaced.append(spans)
    facts = {t: EntityFact(t, rules.rule_for(t).action, n) for t, n in sorted(counts.items())}
    return Transformed(out, facts, replaced)


def _one(value: str, entity_type: str, rule: EntityRule, key: bytes, tokens: Mapping[tuple[str, str], str]) -> str:
    match rule.action:
        case Action.REDACT:
            return str(Redact().operate(value, {}))
        case Action.MASK:
            return mask(value, rule.keep_last, rule.mask_char)
        case Action.REPLACE:
            return str(Replace().operate(value, {"new_value": f"<{entity_type}>"}))
        case Action.HASH:
            return hash_tag(key, entity_type, value)
        case Action.PSEUDONYMIZE:
            return tokens[(entity_type, value)]
        case Action.KEEP:
            return value
        case Action.BLOCK:  # checked before any text is touched
            raise Blocked([entity_type])
    raise AssertionError(f"unhandled action {rule.action}")
