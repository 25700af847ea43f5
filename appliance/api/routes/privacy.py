"""``POST /v1/privacy/analyze`` and ``POST /v1/privacy/anonymize``: the privacy step alone,
for applications that call their own models. Rules come from the tenant's active policy.

Responses never echo values: ``analyze`` returns offsets (Unicode code points into the
text as sent), ``anonymize`` the transformed texts and per-type counts.

Both also speak Presidio's REST shapes, so a Presidio client switches by changing its URL:
an analyze body with ``language`` is Presidio's ``/analyze`` request and gets its list of
results; an anonymize body with ``analyzer_results`` or ``anonymizers`` is Presidio's
``/anonymize`` request and gets ``{"text", "items"}``. The tenant's policy still decides:
a caller may narrow what analyze reports, and may ask anonymize for stricter operators,
never for less protection (:mod:`appliance.privacy.presidio_compat`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, post
from litestar.params import JSONBody

from appliance.api.auth import roles
from appliance.api.deps import Svc
from appliance.errors import Blocked, InvalidInput, NotSupportedYet
from appliance.privacy.presidio_compat import Operator, reason, with_operators
from appliance.privacy.rules import PrivacyRules
from appliance.privacy.spans import Detection
from appliance.roles import Role
from appliance.services.container import Services
from appliance.services.principal import Principal
from appliance.services.privacy import MAX_SCOPE_CHARS, Anonymized, PrivacyService

AuthedRequest = Request[Principal, Any, Any]
MAX_TEXTS = 256

Text = Annotated[str, msgspec.Meta(max_length=10_000_000)]


EntityType = Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")]


class AnalyzeIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    texts: Annotated[list[Text], msgspec.Meta(max_length=MAX_TEXTS)] | None = None
    text: Text | None = None
    # Presidio's analyzer request (``language`` marks one):
    language: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    entities: Annotated[list[EntityType], msgspec.Meta(max_length=100)] | None = None
    score_threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    return_decision_process: bool = False
    correlation_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    trace: bool | None = None
    # Presidio fields that would change detection away from the tenant's policy: refused by name.
    ad_hoc_recognizers: Any = None
    context: Any = None
    allow_list: Any = None
    allow_list_match: Any = None
    regex_flags: Any = None


class OperatorIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One Presidio anonymizer operator; only ``type`` and ``masking_char`` change the result
    (see docs/privacy.md), the others are accepted as Presidio clients send them."""

    type: Annotated[str, msgspec.Meta(max_length=32)]
    new_value: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    masking_char: Annotated[str, msgspec.Meta(min_length=1, max_length=1)] | None = None
    chars_to_mask: int | None = None
    from_end: bool | None = None
    hash_type: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    key: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class AnalyzerResultIn(msgspec.Struct, kw_only=True):
    """A span from the caller's own analysis (Presidio's ``analyzer_results``); the extra
    fields Presidio's analyzer returns (explanations, metadata) may come along."""

    entity_type: EntityType
    start: Annotated[int, msgspec.Meta(ge=0)]
    end: Annotated[int, msgspec.Meta(ge=0)]
    score: float = 1.0


class AnonymizeIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    texts: Annotated[list[Text], msgspec.Meta(max_length=MAX_TEXTS)] | None = None
    text: Text | None = None
    # Presidio's anonymizer request (either field marks one):
    anonymizers: Annotated[dict[str, OperatorIn], msgspec.Meta(max_length=100)] | None = None
    analyzer_results: Annotated[list[AnalyzerResultIn], msgspec.Meta(max_length=10_000)] | None = None
    scope: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=MAX_SCOPE_CHARS,
                description="Conversation id: the same value gets the same pseudonym within a scope.",
            ),
        ]
        | None
    ) = None


class EntityOut(msgspec.Struct):
    entity_type: str
    start: int
    end: int
    score: float


class AnalyzeOut(msgspec.Struct):
    results: list[list[EntityOut]]


class ExplanationOut(msgspec.Struct):
    """Presidio's ``analysis_explanation``, with the fields the appliance can fill."""

    recognizer: str
    original_score: float
    score: float
    textual_explanation: str
    pattern_name: str | None = None
    pattern: str | None = None
    score_context_improvement: float = 0.0
    supportive_context_word: str = ""
    validation_result: bool | None = None


class PresidioResultOut(msgspec.Struct):
    """One item of Presidio's analyzer response."""

    entity_type: str
    start: int
    end: int
    score: float
    analysis_explanation: ExplanationOut | None
    recognition_metadata: dict[str, str]


class ItemOut(msgspec.Struct):
    """One item of Presidio's anonymizer response: offsets into the *anonymized* text."""

    start: int
    end: int
    entity_type: str
    text: str
    operator: str


class PresidioAnonymizeOut(msgspec.Struct):
    text: str
    items: list[ItemOut]
    scope: str | None
    """Not Presidio's: the pseudonym scope, for restoring pseudonymized values later."""


class FactOut(msgspec.Struct):
    count: int
    action: str


class AnonymizeOut(msgspec.Struct):
    texts: list[str]
    scope: str | None
    entities: dict[str, FactOut]


def _texts(texts: list[str] | None, text: str | None) -> list[str]:
    if (texts is None) == (text is None):
        raise InvalidInput("send exactly one of 'texts' (a list) or 'text' (a string)")
    return texts if texts is not None else [text or ""]


def _tenant(request: AuthedRequest) -> str:
    if request.user.tenant_id is None:
        raise InvalidInput("this endpoint needs a tenant key")
    return request.user.tenant_id


def _privacy(services: Services) -> PrivacyService:
    privacy = getattr(services, "privacy", None)
    if not isinstance(privacy, PrivacyService):
        raise NotSupportedYet("the privacy service is not enabled on this server")
    return privacy


def rules_and_ttl(services: Services, tenant_id: str) -> tuple[PrivacyRules, timedelta | None]:
    """The tenant's ``pii`` rules and vault TTL from its active policy (the default preset
    when it has applied none)."""
    policy = services.policies.effective(tenant_id).policy
    return policy.pii, timedelta(hours=policy.retention.vault_ttl_hours)


_PRESIDIO_REFUSED = ("ad_hoc_recognizers", "context", "allow_list", "allow_list_match", "regex_flags")


def _presidio_text(data: AnalyzeIn | AnonymizeIn) -> str:
    if data.texts is not None or data.text is None:
        raise InvalidInput("a Presidio-style request sends one 'text' (a string), not 'texts'")
    return data.text


def _presidio_analysis(services: Services, tenant_id: str, data: AnalyzeIn) -> list[PresidioResultOut]:
    """Presidio's ``/analyze`` over the tenant's policy: ``entities`` and ``score_threshold``
    can only narrow what the policy detects."""
    if data.language != "en":
        raise InvalidInput(f"language {data.language!r} is not supported; this appliance analyzes English ('en') only")
    for name in _PRESIDIO_REFUSED:
        if getattr(data, name) is not None:
            raise InvalidInput(f"{name} is not accepted: what counts as PII is set by the tenant's policy")
    text = _presidio_text(data)
    rules, _ = rules_and_ttl(services, tenant_id)
    privacy = _privacy(services)
    if data.entities is not None:
        known = privacy.detector.supported_entities | {c.entity_type for c in rules.custom_recognizers}
        unknown = sorted(set(data.entities) - known)
        if unknown:
            raise InvalidInput(f"entities: no recognizer finds {', '.join(unknown)}")
    wanted = set(data.entities) if data.entities is not None else None
    threshold = data.score_threshold or 0.0
    (found,) = privacy.analyze(tenant_id, [text], rules)
    return [
        PresidioResultOut(
            d.entity_type,
            d.start,
            d.end,
            d.score,
            ExplanationOut(d.recognizer or "appliance", d.score, d.score, reason(d, rules))
            if data.return_decision_process
            else None,
            {"recognizer_name": d.recognizer or "appliance"},
        )
        for d in found
        if (wanted is None or d.entity_type in wanted) and d.score >= threshold
    ]


def _record_anonymize(
    services: Services, request: AuthedRequest, tenant_id: str, version: int | None, anonymize: Callable[[], Anonymized]
) -> Anonymized:
    """Run ``anonymize`` and audit it: blocked, or the types and counts it transformed."""
    try:
        result = anonymize()
    except Blocked as exc:
        services.audit.record(
            "privacy.anonymize",
            actor=request.user,
            tenant_id=tenant_id,
            outcome="blocked",
            policy_version=version,
            facts={"blocked_types": exc.entity_types},
        )
        raise
    # Pseudonyms were stored for this caller: the trail records that (types and counts only).
    services.audit.record(
        "privacy.anonymize",
        actor=request.user,
        tenant_id=tenant_id,
        policy_version=version,
        facts={"entities": result.audit_facts()},
    )
    return result


class PrivacyController(Controller):
    path = "/v1/privacy"
    tags = ["privacy"]
    guards = [roles(Role.APP, Role.TENANT_ADMIN)]

    @post("/analyze", sync_to_thread=True, status_code=200)
    def analyze(
        self, request: AuthedRequest, services: Svc, data: JSONBody[AnalyzeIn]
    ) -> AnalyzeOut | list[PresidioResultOut]:
        """Where PII is in each text, by type and code-point offsets. Nothing is stored.

        With ``language`` the body is Presidio's analyzer request and the answer its list of
        results (``return_decision_process`` adds a reason to each)."""
        tenant_id = _tenant(request)
        if data.language is not None:
            return _presidio_analysis(services, tenant_id, data)
        rules, _ = rules_and_ttl(services, tenant_id)
        found = _privacy(services).analyze(tenant_id, _texts(data.texts, data.text), rules)
        return AnalyzeOut([[EntityOut(d.entity_type, d.start, d.end, d.score) for d in ds] for ds in found])

    @post("/anonymize", sync_to_thread=True, status_code=200)
    def anonymize(
        self, request: AuthedRequest, services: Svc, data: JSONBody[AnonymizeIn]
    ) -> AnonymizeOut | PresidioAnonymizeOut:
        """The texts with the policy's actions applied; 422 naming the types if it blocks one.

        With ``anonymizers`` or ``analyzer_results`` the body is Presidio's anonymizer request
        and the answer ``{"text", "items"}``: the caller's spans are transformed too, and its
        operators apply where they are stricter than the policy."""
        tenant_id = _tenant(request)
        rules, ttl = rules_and_ttl(services, tenant_id)
        version = services.policies.effective(tenant_id).version
        privacy = _privacy(services)
        if data.anonymizers is None and data.analyzer_results is None:
            texts = _texts(data.texts, data.text)
            result = _record_anonymize(
                services,
                request,
                tenant_id,
                version,
                lambda: privacy.anonymize(tenant_id, texts, rules, scope=data.scope, ttl=ttl),
            )
            return AnonymizeOut(
                result.texts,
                result.scope,
                {t: FactOut(f.count, f.action.value) for t, f in result.facts.items()},
            )
        text = _presidio_text(data)
        operators = {entity: Operator(op.type, op.masking_char) for entity, op in (data.anonymizers or {}).items()}
        stricter = with_operators(rules, operators)
        theirs = [Detection(r.start, r.end, r.entity_type, r.score, "caller") for r in data.analyzer_results or []]
        result = _record_anonymize(
            services,
            request,
            tenant_id,
            version,
            lambda: privacy.anonymize(tenant_id, [text], stricter, scope=data.scope, ttl=ttl, also=[theirs]),
        )
        return PresidioAnonymizeOut(
            result.texts[0],
            [ItemOut(r.start, r.end, r.entity_type, r.text, r.action.value) for r in result.replacements[0]],
            result.scope,
        )
