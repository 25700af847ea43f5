"""Audit API: read the trail (compliance and operator: every tenant; a tenant admin: its own)
and verify the chain (compliance and operator)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from appliance.api.auth import roles
from appliance.api.deps import Svc
from appliance.api.openapi_contract import RESPONSE_MEDIA_TYPES
from appliance.roles import Role
from appliance.services.audit import AuditFilter, AuditView, audit_log_of
from appliance.services.audit_chain import VerifyResult
from appliance.services.audit_export import ExportFormat, export_text
from appliance.services.paging import MAX_PAGE
from appliance.services.principal import Principal

AuthedRequest = Request[Principal, Any, Any]


class AuditEntryOut(msgspec.Struct):
    id: int
    created_at: datetime
    tenant_id: str | None
    actor: str
    action: str
    object: str | None
    policy_version: int | None
    outcome: str
    latency_ms: float | None
    facts: dict[str, Any]
    has_payload: bool
    payload_expires_at: datetime | None


class AuditPageOut(msgspec.Struct):
    items: list[AuditEntryOut]
    next_cursor: str | None


class VerifyOut(msgspec.Struct):
    ok: bool
    entries_checked: int
    checkpoints_checked: int
    first_entry_id: int | None
    last_entry_id: int | None
    problem: str | None
    entry_id: int | None
    checkpoint_id: int | None
    detail: str


def _entry(e: AuditView) -> AuditEntryOut:
    return AuditEntryOut(
        e.id,
        e.created_at,
        e.tenant_id,
        e.actor,
        e.action,
        e.object,
        e.policy_version,
        e.outcome,
        e.latency_ms,
        e.facts,
        e.has_payload,
        e.payload_expires_at,
    )


def _verify(r: VerifyResult) -> VerifyOut:
    return VerifyOut(
        r.ok,
        r.entries_checked,
        r.checkpoints_checked,
        r.first_entry_id,
        r.last_entry_id,
        None if r.problem is None else r.problem.value,
        r.entry_id,
        r.checkpoint_id,
        r.detail,
    )


MAX_HTTP_EXPORT = 100_000
_EXPORT_MEDIA = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


class ExportBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    format: ExportFormat = "jsonl"
    since: datetime | None = None
    until: datetime | None = None


EntryId = Annotated[int, PathParameter(ge=1, le=2**53 - 1, description="Audit entry id")]


class AuditController(Controller):
    path = "/admin/v1/audit"
    tags = ["admin: audit"]

    @get("/", guards=[roles(Role.COMPLIANCE, Role.OPERATOR, Role.TENANT_ADMIN)], sync_to_thread=True)
    def list_audit(
        self,
        request: AuthedRequest,
        services: Svc,
        since: Annotated[datetime | None, QueryParameter(description="Inclusive, ISO 8601 with zone.")] = None,
        until: Annotated[datetime | None, QueryParameter(description="Exclusive, ISO 8601 with zone.")] = None,
        tenant: Annotated[str | None, QueryParameter(max_length=63, description="Tenant name or id.")] = None,
        actor: Annotated[str | None, QueryParameter(max_length=64)] = None,
        action: Annotated[str | None, QueryParameter(max_length=64)] = None,
        outcome: Annotated[str | None, QueryParameter(max_length=32)] = None,
        cursor: Annotated[
            str | None, QueryParameter(max_length=64, description="next_cursor of the previous page.")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 100,
    ) -> AuditPageOut:
        """Newest first. A tenant admin sees its own tenant's entries only (other filters give empty pages)."""
        page = audit_log_of(services).query(
            request.user,
            AuditFilter(since=since, until=until, tenant=tenant, actor=actor, action=action, outcome=outcome),
            cursor=cursor,
            limit=limit,
        )
        return AuditPageOut([_entry(e) for e in page.items], page.next_cursor)

    @get("/verify", guards=[roles(Role.COMPLIANCE, Role.OPERATOR)], sync_to_thread=True)
    def verify_audit(self, request: AuthedRequest, services: Svc) -> VerifyOut:
        """Walk the whole chain; names the first edited, reordered or deleted entry, or a truncation."""
        return _verify(audit_log_of(services).verify(request.user))

    @post(
        "/export",
        guards=[roles(Role.COMPLIANCE, Role.OPERATOR)],
        sync_to_thread=True,
        status_code=200,
        opt={RESPONSE_MEDIA_TYPES: sorted(_EXPORT_MEDIA.values())},
    )
    def export_audit(self, request: AuthedRequest, services: Svc, data: JSONBody[ExportBody]) -> Response[str]:
        """Download a contiguous slice of the chain (JSONL or CSV) that verifies offline with
        ``appliance audit verify-export``. Without ``until`` it ends at a fresh signed checkpoint
        (hence POST: exporting writes that checkpoint). At most 100,000 entries per download."""
        ex = audit_log_of(services).export(request.user, since=data.since, until=data.until)
        body = export_text(ex, data.format, MAX_HTTP_EXPORT)
        stamp = ex.exported_at.strftime("%Y%m%dT%H%M%SZ")
        return Response(
            body,
            media_type=_EXPORT_MEDIA[data.format],
            headers={"content-disposition": f'attachment; filename="audit-{stamp}.{data.format}"'},
        )

    @get("/{entry_id:int}", guards=[roles(Role.COMPLIANCE, Role.OPERATOR, Role.TENANT_ADMIN)], sync_to_thread=True)
    def get_audit_entry(self, request: AuthedRequest, services: Svc, entry_id: EntryId) -> AuditEntryOut:
        """Another tenant's entry is 404, exactly like a missing one."""
        return _entry(audit_log_of(services).get(request.user, entry_id))
