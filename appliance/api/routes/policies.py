"""Policy administration: compliance officers write; tenant admins read their own."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from appliance.api.auth import roles
from appliance.api.deps import Svc
from appliance.api.routes.admin import INT32_MAX, AuthedRequest, Cursor, Limit, TenantRef, VersionNumber
from appliance.errors import NotFound
from appliance.policy.loader import PolicyError, load_policy_text, preset_names, preset_text
from appliance.policy.schema import json_schema
from appliance.roles import Role
from appliance.services.paging import DEFAULT_PAGE
from appliance.services.policies import VersionView

Version = VersionNumber
READERS = roles(Role.COMPLIANCE, Role.OPERATOR, Role.TENANT_ADMIN)
WRITERS = roles(Role.COMPLIANCE)
Document = Annotated[str, msgspec.Meta(min_length=1, max_length=256 * 1024, description="Policy YAML.")]


class ApplyBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    document: Document
    comment: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class RollbackBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX)]
    comment: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class LintBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    document: Document


class PreviewBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    document: Document
    texts: Annotated[list[Annotated[str, msgspec.Meta(max_length=100_000)]], msgspec.Meta(min_length=1, max_length=64)]
    tenant: Annotated[str, msgspec.Meta(max_length=63)] | None = None


class DetectionOut(msgspec.Struct):
    entity_type: str
    start: int
    end: int
    score: float
    text: str
    action: str


class PreviewOut(msgspec.Struct):
    detections: list[list[DetectionOut]]
    texts: list[str] | None
    blocked: list[str]


class VersionOut(msgspec.Struct):
    tenant: str
    version: int
    author: str
    comment: str
    content_hash: str
    created_at: datetime
    active: bool


class VersionPageOut(msgspec.Struct):
    items: list[VersionOut]
    next_cursor: str | None


class VersionDocOut(msgspec.Struct):
    version: VersionOut
    document: str


class LintIssue(msgspec.Struct):
    field: str
    message: str
    line: int | None
    column: int | None


class LintOut(msgspec.Struct):
    ok: bool
    issues: list[LintIssue]
    policy: dict[str, Any] | None = None


def _v(v: VersionView) -> VersionOut:
    return VersionOut(v.tenant, v.version, v.author, v.comment, v.content_hash, v.created_at, v.active)


class PolicyController(Controller):
    path = "/admin/v1/tenants/{tenant:str}/policy"
    tags = ["admin: policies"]

    @get("/", guards=[READERS], sync_to_thread=True)
    def active_policy(self, request: AuthedRequest, services: Svc, tenant: TenantRef) -> dict[str, Any]:
        """The active policy, fully resolved (presets applied); version null means the default preset."""
        t = services.tenants.get(request.user, tenant)  # NotFound for another tenant's admin
        active = services.policies.effective(t.id)
        return {"tenant": t.slug, "version": active.version, "policy": active.policy.model_dump(mode="json")}

    @post("/", guards=[WRITERS], sync_to_thread=True)
    def apply_policy(
        self, request: AuthedRequest, services: Svc, tenant: TenantRef, data: JSONBody[ApplyBody]
    ) -> VersionOut:
        return _v(services.policies.apply(request.user, tenant, data.document, data.comment))

    @post("/rollback", guards=[WRITERS], sync_to_thread=True)
    def rollback_policy(
        self, request: AuthedRequest, services: Svc, tenant: TenantRef, data: JSONBody[RollbackBody]
    ) -> VersionOut:
        return _v(services.policies.rollback(request.user, tenant, data.version, data.comment))

    @get("/versions", guards=[READERS], sync_to_thread=True)
    def policy_history(
        self,
        request: AuthedRequest,
        services: Svc,
        tenant: TenantRef,
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
    ) -> VersionPageOut:
        """Versions oldest first, a page at a time: follow ``next_cursor`` until it is null."""
        page = services.policies.history(request.user, tenant, cursor=cursor, limit=limit)
        return VersionPageOut([_v(v) for v in page.items], page.next_cursor)

    @get("/versions/{version:int}", guards=[READERS], sync_to_thread=True)
    def policy_version(
        self, request: AuthedRequest, services: Svc, tenant: TenantRef, version: Version
    ) -> VersionDocOut:
        doc = services.policies.get(request.user, tenant, version)
        return VersionDocOut(_v(doc.view), doc.document)

    @get("/diff", guards=[READERS], sync_to_thread=True)
    def policy_diff(
        self,
        request: AuthedRequest,
        services: Svc,
        tenant: TenantRef,
        from_version: Annotated[int, QueryParameter(name="from", ge=1, le=INT32_MAX)],
        to_version: Annotated[int, QueryParameter(name="to", ge=1, le=INT32_MAX)],
    ) -> dict[str, Any]:
        d = services.policies.diff(request.user, tenant, from_version, to_version)
        return {
            "tenant": d.tenant,
            "from": d.from_version,
            "to": d.to_version,
            "changes": [{"path": c.path, "old": c.old, "new": c.new} for c in d.changes],
            "text_diff": d.text_diff,
        }


class PolicyToolsController(Controller):
    path = "/admin/v1/policies"
    tags = ["admin: policies"]
    guards = [READERS]

    @post("/lint", sync_to_thread=True, status_code=200)
    def lint_policy(self, data: JSONBody[LintBody]) -> LintOut:
        """Validate a draft; problems come back with field path, line and column. Stores nothing."""
        try:
            policy = load_policy_text(data.document)
        except PolicyError as exc:
            return LintOut(False, [LintIssue(i.path, i.message, i.line, i.column) for i in exc.issues])
        return LintOut(True, [], policy.model_dump(mode="json"))

    @post("/preview", sync_to_thread=True, status_code=200)
    def preview_policy(self, request: AuthedRequest, services: Svc, data: JSONBody[PreviewBody]) -> PreviewOut:
        """Run a draft on sample text through the live detection and transforms; stores nothing.
        With ``tenant``, hash tags use that tenant's key, so they match what live requests get."""
        policy = load_policy_text(data.document)
        key = None
        if data.tenant is not None:
            key = services.privacy.tenant_hash_key(services.tenants.get(request.user, data.tenant).id)
        result = services.privacy.preview(data.texts, policy.pii, hash_key=key)
        return PreviewOut(
            detections=[
                [
                    DetectionOut(
                        d.entity_type,
                        d.start,
                        d.end,
                        round(d.score, 3),
                        t[d.start : d.end],
                        policy.pii.rule_for(d.entity_type).action.value,
                    )
                    for d in ds
                ]
                for t, ds in zip(data.texts, result.detections, strict=True)
            ],
            texts=result.texts,
            blocked=result.blocked,
        )

    @get("/schema", sync_to_thread=False)
    def policy_schema(self) -> dict[str, object]:
        return json_schema()

    @get("/presets", sync_to_thread=False)
    def list_presets(self) -> list[str]:
        return preset_names()

    @get("/presets/{name:str}", sync_to_thread=False, media_type="application/yaml")
    def get_preset(self, name: Annotated[str, PathParameter(max_length=63)]) -> str:
        if name not in preset_names():
            raise NotFound("no such preset")
        return preset_text(name)
