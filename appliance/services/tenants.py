"""Tenants: creation (with their first data key), listing, lookup and crypto-shredding deletion."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from appliance.crypto.blobs import BlobStore
from appliance.crypto.data_keys import DataKeyService
from appliance.crypto.records import DATA_PURPOSE
from appliance.db.engine import transaction
from appliance.db.models import Tenant
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.roles import Role
from appliance.services.audit import AuditLog
from appliance.services.principal import Principal

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class TenantView:
    id: str
    slug: str
    display_name: str
    created_at: datetime


def _view(t: Tenant) -> TenantView:
    return TenantView(t.id, t.slug, t.display_name, t.created_at)


def find_tenant(session: Session, principal: Principal, ref: str) -> Tenant:
    """Resolve a slug or id the principal may see; anything else is NotFound."""
    tenant = session.scalar(select(Tenant).where((Tenant.slug == ref) | (Tenant.id == ref)))
    if tenant is None:
        raise NotFound("no such tenant")
    principal.require_tenant_access(tenant.id)
    return tenant


class TenantService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        data_keys: DataKeyService,
        audit: AuditLog,
        blobs: BlobStore,
        *,
        on_delete: Callable[[str], None] | None = None,
    ) -> None:
        """``on_delete(tenant_id)`` runs after a deletion commits (caches forget the tenant)."""
        self._sessions = sessions
        self._keys = data_keys
        self._audit = audit
        self._blobs = blobs
        self._on_delete = on_delete

    def create(self, principal: Principal, slug: str, display_name: str | None = None) -> TenantView:
        principal.require(Role.OPERATOR)
        if not SLUG.fullmatch(slug):
            raise InvalidInput(
                "tenant name must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
            )
        with transaction(self._sessions) as session:
            if session.scalar(select(Tenant.id).where(Tenant.slug == slug)) is not None:
                raise Conflict(f"tenant {slug!r} already exists")
            tenant = Tenant(slug=slug, display_name=display_name or slug)
            session.add(tenant)
            session.flush()
            self._keys.create(session, tenant.id, DATA_PURPOSE, tenant.id)
            self._audit.record("tenant.create", actor=principal, tenant_id=tenant.id, object=slug, session=session)
            return _view(tenant)

    def list(self, principal: Principal) -> list[TenantView]:
        with self._sessions() as session:
            query = select(Tenant).order_by(Tenant.slug)
            if not principal.role.is_global:
                query = query.where(Tenant.id == principal.tenant_id)
            return [_view(t) for t in session.scalars(query)]

    def get(self, principal: Principal, ref: str) -> TenantView:
        with self._sessions() as session:
            return _view(find_tenant(session, principal, ref))

    def delete(self, principal: Principal, ref: str) -> TenantView:
        """Destroy the tenant's data keys first, then its rows (keys, content) by cascade."""
        principal.require(Role.OPERATOR)
        with transaction(self._sessions) as session:
            tenant = find_tenant(session, principal, ref)
            view = _view(tenant)
            destroyed = self._keys.destroy_scope(session, tenant.id)
            session.delete(tenant)
            self._audit.record(
                "tenant.delete",
                actor=principal,
                tenant_id=view.id,
                object=view.slug,
                facts={"crypto_shredded": True, "data_keys_destroyed": destroyed},
                session=session,
            )
        if self._on_delete is not None:
            self._on_delete(view.id)
        self._blobs.purge_tenant(view.id)  # already unreadable without the keys; this frees the disk
        return view
