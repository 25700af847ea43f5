"""What an operator checks at a glance: key ages and rotation status, data keys, models.

Read-only views for the operations page of the admin console and the operations API. They
never hold key material or secrets: ids, names, roles, times, versions and counts only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from appliance.db.base import utcnow
from appliance.db.models import ApiKey, Tenant
from appliance.roles import Role
from appliance.services.principal import Principal

if TYPE_CHECKING:
    from appliance.models import ModelRegistry
    from appliance.services.key_rotation import KeyStatus


@dataclass(frozen=True)
class ApiKeyAge:
    id: str
    tenant: str | None
    role: str
    name: str
    created_at: datetime
    age_days: float
    last_used_at: datetime | None
    expires_at: datetime | None
    rotation_due: bool
    """Older than the rotation period: create a replacement, move the caller over, revoke this one."""


@dataclass(frozen=True)
class DataKeyAge:
    tenant: str | None
    scope: str
    purpose: str
    version: int
    state: str
    age_days: float
    on_current_kek: bool
    records: int
    blobs: int
    rotation_due: bool
    """An active tenant data key older than the rotation period (``appliance crypto-keys rotate-tenant``)."""


@dataclass(frozen=True)
class DataKeyReport:
    master_kek_id: str
    rows_on_old_kek: int
    keys: list[DataKeyAge]


@dataclass(frozen=True)
class ModelView:
    name: str
    kind: str
    owner: str | None
    """The owning tenant's name, or None for shared and built-in models."""
    device: str
    builtin: bool
    version: int
    created_at: datetime | None


class OperationsService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        rotation_days: int,
        key_status: Callable[[], KeyStatus],
        registry: Callable[[], ModelRegistry],
    ) -> None:
        """``key_status`` and ``registry`` are called on use: the model layer loads lazily."""
        self._sessions = sessions
        self._rotation = timedelta(days=rotation_days)
        self._key_status = key_status
        self._registry = registry

    @property
    def rotation_days(self) -> int:
        return self._rotation.days

    def api_key_ages(self, principal: Principal) -> list[ApiKeyAge]:
        """Every key not revoked, oldest first."""
        principal.require(Role.OPERATOR)
        now = utcnow()
        with self._sessions() as session:
            slugs = {str(i): str(s) for i, s in session.execute(select(Tenant.id, Tenant.slug))}
            rows = session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)).order_by(ApiKey.created_at))
            return [
                ApiKeyAge(
                    k.id,
                    slugs.get(k.tenant_id) if k.tenant_id else None,
                    k.role,
                    k.name,
                    k.created_at,
                    round((now - k.created_at).total_seconds() / 86400, 2),
                    k.last_used_at,
                    k.expires_at,
                    now - k.created_at > self._rotation,
                )
                for k in rows
            ]

    def data_keys(self, principal: Principal) -> DataKeyReport:
        principal.require(Role.OPERATOR)
        status = self._key_status()
        return DataKeyReport(
            status.master_kek_id,
            status.rows_on_old_kek,
            [
                DataKeyAge(
                    k.tenant,
                    "system" if k.tenant is None else "tenant",
                    k.purpose,
                    k.version,
                    k.state,
                    k.age_days,
                    k.on_current_kek,
                    k.records,
                    k.blobs,
                    k.state == "active" and k.tenant is not None and k.age_days > self._rotation.days,
                )
                for k in status.keys
            ],
        )

    def models(self, principal: Principal) -> list[ModelView]:
        principal.require(Role.OPERATOR)
        with self._sessions() as session:
            slugs = {str(i): str(s) for i, s in session.execute(select(Tenant.id, Tenant.slug))}
        return [
            ModelView(m.name, m.kind, slugs.get(m.owner), m.device, m.builtin, m.version, m.created_at)
            for m in self._registry().list(all_tenants=True)
        ]
