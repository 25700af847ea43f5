"""``POST /v1/privacy/analyze`` and ``POST /v1/privacy/anonymize``: the privacy step alone,
for applications that call their own models. Rules come from the tenant's active policy.

Responses never echo values: ``analyze`` returns offsets (Unicode code points into the
text as sent), ``anonymize`` the transformed texts and per-type counts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, post
from litestar.params import JSONBody

from appliance.api.auth import roles
from appliance.api.deps import Svc
from appliance.errors import Blocked, InvalidInput, NotSupportedYet
from appliance.privacy.rules import PrivacyRules
from appliance.roles import Role
from appliance.services.container import Services
from appliance.services.principal import Principal
from appliance.services.privacy import MAX_SCOPE_CHARS, PrivacyService

AuthedRequest = Request[Principal, Any, Any]
MAX_TEXTS = 256

Text = Annotated[str, msgspec.Meta(max_length=10_000_000)]


class AnalyzeIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    texts: Annotated[list[Text], msgspec.Meta(max_length=MAX_TEXTS)] | None = None
    text: Text | None = None


class AnonymizeIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    texts: Annotated[list[Text], msgspec.Meta(max_length=MAX_TEXTS)] | None = None
    text: Text | None = None
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


class PrivacyController(Controller):
    path = "/v1/privacy"
    tags = ["privacy"]
    guards = [roles(Role.APP, Role.TENANT_ADMIN)]

    @post("/analyze", sync_to_thread=True, status_code=200)
    def analyze(self, request: AuthedRequest, services: Svc, data: JSONBody[AnalyzeIn]) -> AnalyzeOut:
        """Where PII is in each text, by type and code-point offsets. Nothing is stored."""
        tenant_id = _tenant(request)
        rules, _ = rules_and_ttl(services, tenant_id)
        found = _privacy(services).analyze(tenant_id, _texts(data.texts, data.text), rules)
        return AnalyzeOut([[EntityOut(d.entity_type, d.start, d.end, d.score) for d in ds] for ds in found])

    @post("/anonymize", sync_to_thread=True, status_code=200)
    def anonymize(self, request: AuthedRequest, services: Svc, data: JSONBody[AnonymizeIn]) -> AnonymizeOut:
        """The texts with the policy's actions applied; 422 naming the types if it blocks one."""
        tenant_id = _tenant(request)
        rules, ttl = rules_and_ttl(services, tenant_id)
        version = services.policies.effective(tenant_id).version
        try:
            result = _privacy(services).anonymize(
                tenant_id, _texts(data.texts, data.text), rules, scope=data.scope, ttl=ttl
            )
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
        return AnonymizeOut(
            result.texts,
            result.scope,
            {t: FactOut(f.count, f.action.value) for t, f in result.facts.items()},
        )
