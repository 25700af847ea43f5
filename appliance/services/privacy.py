"""The privacy step as the rest of the appliance uses it: analyze, anonymize, restore.

Chat, embeddings, datasets and the ``/v1/privacy`` endpoints all go through here, so the
policy's actions mean the same thing everywhere. The :class:`Detector` is built once per
process (loading the NER model takes seconds) and handed in; every method is safe to
call from a thread pool.

What leaves this module for logs, metrics and the audit trail is :class:`EntityFact`:
entity types, actions and counts. Values never do.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from appliance.crypto.data_keys import DataKeyService
from appliance.errors import Blocked, InvalidInput
from appliance.privacy.detection import Detection, Detector
from appliance.privacy.restore import StreamRestorer, restore
from appliance.privacy.rules import PrivacyRules
from appliance.privacy.transforms import EntityFact, Replacement, apply, transform
from appliance.privacy.vault import PseudonymVault, token
from appliance.services import metrics

HASH_PURPOSE = "pii-hash"
MAX_SCOPE_CHARS = 200


@dataclass(frozen=True)
class Anonymized:
    texts: list[str]
    scope: str | None  # the pseudonym scope used; None when nothing was pseudonymized
    facts: dict[str, EntityFact]
    replacements: list[list[Replacement]] = field(default_factory=list)
    """Per text, where each transformed span landed (Presidio's anonymizer ``items``)."""

    def audit_facts(self) -> dict[str, dict[str, object]]:
        """JSON-ready ``{"PERSON": {"count": 2, "action": "pseudonymize"}}`` for the audit entry."""
        return {t: {"count": f.count, "action": f.action.value} for t, f in self.facts.items()}


@dataclass(frozen=True)
class Preview:
    """A dry run of a policy on sample text: what was found and what a model would see."""

    detections: list[list[Detection]]
    texts: list[str] | None  # None when the policy blocks the text
    blocked: list[str]
    facts: dict[str, EntityFact]


def _numbered(items: Sequence[tuple[str, str]]) -> Mapping[tuple[str, str], str]:
    """Pseudonyms numbered in memory, exactly as a fresh vault scope would number them."""
    counters: dict[str, int] = {}
    out: dict[tuple[str, str], str] = {}
    for entity_type, value in items:
        counters[entity_type] = counters.get(entity_type, 0) + 1
        out[(entity_type, value)] = token(entity_type, counters[entity_type])
    return out


@dataclass(frozen=True)
class AnonymizeCall:
    """One request's part of :meth:`PrivacyService.anonymize_many`; fields as in ``anonymize``."""

    tenant_id: str
    texts: Sequence[str]
    rules: PrivacyRules
    scope: str | None = None
    ttl: timedelta | None = None


def _check_scope(scope: str | None) -> None:
    if scope is not None and not 0 < len(scope) <= MAX_SCOPE_CHARS:
        raise InvalidInput(f"scope must be 1 to {MAX_SCOPE_CHARS} characters")


def _count_detections(detections: Iterable[Detection]) -> None:
    for d in detections:
        metrics.ENTITIES_DETECTED.labels(d.entity_type, "ingress").inc()


def _with_extra(ours: list[Detection], theirs: Sequence[Detection], length: int) -> list[Detection]:
    """Ours plus the caller's spans that lie inside the text and overlap none of ours (nor
    each other: the first of two overlapping ones is kept)."""
    kept = list(ours)
    for d in sorted(theirs):
        if not 0 <= d.start < d.end <= length:
            raise InvalidInput(f"a detection from {d.start} to {d.end} lies outside its text of {length} characters")
        if all(d.end <= k.start or d.start >= k.end for k in kept):
            kept.append(d)
    return sorted(kept)


class PrivacyService:
    """``detector`` may be a ready :class:`Detector` or a factory for one: the factory runs
    once, on first use (or when :meth:`warm_up` is called at server start), so building
    the service container stays cheap for commands and tests that never detect PII."""

    def __init__(
        self,
        detector: Detector | Callable[[], Detector],
        vault: PseudonymVault,
        data_keys: DataKeyService,
        *,
        default_ttl: timedelta,
    ) -> None:
        self._detector = detector if isinstance(detector, Detector) else None
        self._factory = None if isinstance(detector, Detector) else detector
        self._detector_lock = threading.Lock()
        self._vault = vault
        self._keys = data_keys
        self._default_ttl = default_ttl

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            with self._detector_lock:
                if self._detector is None:
                    assert self._factory is not None
                    self._detector = self._factory()
        return self._detector

    def warm_up(self) -> None:
        """Load the NER model now (seconds); raises ConfigError if it is not installed."""
        _ = self.detector

    def analyze(self, tenant_id: str, texts: Sequence[str], rules: PrivacyRules) -> list[list[Detection]]:
        """Detections per text (code-point offsets); nothing is stored."""
        del tenant_id  # detection is tenant-neutral today; kept so per-tenant models can come later
        result = self.detector.analyze(texts, rules)
        for ds in result:
            _count_detections(ds)
        return result

    def anonymize(
        self,
        tenant_id: str,
        texts: Sequence[str],
        rules: PrivacyRules,
        *,
        scope: str | None = None,
        ttl: timedelta | None = None,
        also: Sequence[Sequence[Detection]] | None = None,
    ) -> Anonymized:
        """Apply the rules' actions. Raises :class:`Blocked` (types only) if a blocked type
        is present; nothing is stored then. Pseudonyms go into ``scope`` (a conversation
        id chosen by the caller); without one a fresh random scope is made and returned,
        which the caller must keep to restore the answer.

        ``also`` adds the caller's own detections per text (a Presidio client's
        ``analyzer_results``): they can only add to what is transformed; where one overlaps
        a detection of ours, ours is kept."""
        _check_scope(scope)
        detections = self.analyze(tenant_id, texts, rules)
        if also is not None:
            if len(also) != len(texts):
                raise InvalidInput("the extra detections must give one list per text")
            detections = [
                _with_extra(ours, theirs, len(t)) for ours, theirs, t in zip(detections, also, texts, strict=True)
            ]
        return self._transform(tenant_id, texts, detections, rules, scope, ttl)

    def anonymize_many(self, calls: Sequence[AnonymizeCall]) -> list[Anonymized | Exception]:
        """:meth:`anonymize` for several independent requests at once, one outcome per call
        (the :class:`Anonymized` or the exception that call alone would have raised).

        Calls with equal rules share one detection pass (spaCy is much cheaper per text in a
        batch); everything else, names seen in one request included, stays per call."""
        outcomes: list[Anonymized | Exception | None] = [None] * len(calls)
        pending: list[int] = []
        for i, call in enumerate(calls):
            try:
                _check_scope(call.scope)
            except InvalidInput as exc:
                outcomes[i] = exc
            else:
                pending.append(i)
        while pending:
            rules = calls[pending[0]].rules
            same = [i for i in pending if calls[i].rules == rules]
            pending = [i for i in pending if calls[i].rules != rules]
            try:
                found = self.detector.analyze_groups([calls[i].texts for i in same], rules)
            except InvalidInput:
                found = None  # one call's text is too long: let each call fail or pass on its own
            for n, i in enumerate(same):
                call = calls[i]
                try:
                    if found is None:
                        detections = self.analyze(call.tenant_id, call.texts, rules)
                    else:
                        detections = found[n]
                        for ds in detections:
                            _count_detections(ds)
                    outcomes[i] = self._transform(call.tenant_id, call.texts, detections, rules, call.scope, call.ttl)
                except Exception as exc:  # noqa: BLE001 - handed to that call's caller, who raises it
                    outcomes[i] = exc
        return [o if o is not None else InvalidInput("not anonymized") for o in outcomes]

    def _transform(
        self,
        tenant_id: str,
        texts: Sequence[str],
        detections: list[list[Detection]],
        rules: PrivacyRules,
        scope: str | None,
        ttl: timedelta | None,
    ) -> Anonymized:
        used_scope: list[str] = []

        def pseudonymize(items: Sequence[tuple[str, str]]) -> Mapping[tuple[str, str], str]:
            chosen = scope or secrets.token_urlsafe(18)
            used_scope.append(chosen)
            return self._vault.tokens(tenant_id, chosen, items, ttl or self._default_ttl)

        try:
            done = transform(
                texts,
                detections,
                rules,
                hash_key=lambda: self._keys.active(tenant_id, HASH_PURPOSE, tenant_id=tenant_id).key,
                pseudonymize=pseudonymize,
            )
        except Blocked as exc:
            for t in exc.entity_types:
                metrics.TRANSFORMS_APPLIED.labels(t, "block").inc()
            raise
        for fact in done.facts.values():
            metrics.TRANSFORMS_APPLIED.labels(fact.entity_type, fact.action.value).inc(fact.count)
        return Anonymized(done.texts, used_scope[0] if used_scope else scope, done.facts, done.replacements)

    def preview(self, texts: Sequence[str], rules: PrivacyRules, *, hash_key: bytes | None = None) -> Preview:
        """The live detection and transforms on sample text, storing nothing: pseudonyms are
        numbered in memory and, without a tenant's key, hash tags use a throwaway key."""
        detections = self.detector.analyze(texts, rules)
        key = hash_key or secrets.token_bytes(32)
        try:
            out, facts = apply(texts, detections, rules, hash_key=lambda: key, pseudonymize=_numbered)
        except Blocked as exc:
            return Preview(detections, None, exc.entity_types, {})
        return Preview(detections, out, [], facts)

    def tenant_hash_key(self, tenant_id: str) -> bytes:
        return self._keys.active(tenant_id, HASH_PURPOSE, tenant_id=tenant_id).key

    def restore(self, tenant_id: str, scope: str, text: str) -> str:
        """``text`` with this scope's known pseudonyms replaced by the originals."""
        out, n = restore(text, lambda toks: self._lookup(tenant_id, scope, toks))
        metrics.PSEUDONYMS_RESTORED.inc(n)
        return out

    def stream_restorer(self, tenant_id: str, scope: str) -> StreamRestorer:
        """For streamed answers: ``feed`` each chunk, then ``flush`` once at the end."""
        return StreamRestorer(lambda toks: self._lookup(tenant_id, scope, toks))

    def _lookup(self, tenant_id: str, scope: str, tokens: Iterable[str]) -> Mapping[str, str]:
        return self._vault.originals(tenant_id, scope, tokens)

    def purge_expired(self) -> int:
        return self._vault.purge_expired()
