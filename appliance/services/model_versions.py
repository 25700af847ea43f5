"""Trained models' versions and cards, as principals see them: who may read, roll back or
remove a version of a tenant's model, and the audit entry each change leaves.

The mechanism (sealing, the ``model_versions`` rows, which version the registry serves)
is :class:`appliance.models.registry.ModelRegistry`'s. A tenant's admin sees and changes
only its own models; operator and compliance see every tenant's (compliance reads only).
Another tenant's model looks absent (404), exactly like a name that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from appliance.models.registry import VersionInfo
from appliance.roles import Role
from appliance.services.audit import AuditLog
from appliance.services.principal import Principal
from appliance.services.tenants import TenantService

if TYPE_CHECKING:
    from appliance.models.registry import ModelRegistry

READERS = (Role.OPERATOR, Role.COMPLIANCE, Role.TENANT_ADMIN)
WRITERS = (Role.OPERATOR, Role.TENANT_ADMIN)


@dataclass(frozen=True)
class CardView:
    version: VersionInfo
    card: dict[str, Any]


class ModelVersionService:
    def __init__(self, registry: Callable[[], ModelRegistry], tenants: TenantService, audit: AuditLog) -> None:
        self._registry = registry
        self._tenants = tenants
        self._audit = audit

    def versions(self, principal: Principal, tenant: str, name: str) -> list[VersionInfo]:
        principal.require(*READERS)
        return self._registry().versions(self._tenant_id(principal, tenant), name)

    def card(self, principal: Principal, tenant: str, name: str, version: int | None = None) -> CardView:
        principal.require(*READERS)
        info, card = self._registry().card(self._tenant_id(principal, tenant), name, version)
        return CardView(info, card)

    def rollback(self, principal: Principal, tenant: str, name: str, to: int) -> VersionInfo:
        """Serve version ``to`` from the next request on (servers follow within the model
        cache's few seconds). The switch and its audit entry commit together: an audit trail
        that cannot be written leaves the served version as it was."""
        principal.require(*WRITERS)
        tenant_id = self._tenant_id(principal, tenant)

        def record(session: Session, before: int) -> None:
            self._audit.record(
                "model.rollback",
                actor=principal,
                tenant_id=tenant_id,
                object=f"model:{name}",
                facts={"from_version": before, "to_version": to},
                session=session,
            )

        return self._registry().rollback(tenant_id, name, to, record=record)

    def remove_version(self, principal: Principal, tenant: str, name: str, version: int) -> VersionInfo:
        principal.require(*WRITERS)
        tenant_id = self._tenant_id(principal, tenant)
        info = self._registry().remove_version(tenant_id, name, version)
        self._audit.record(
            "model.version.remove",
            actor=principal,
            tenant_id=tenant_id,
            object=f"model:{name}",
            facts={"version": version, "files_deleted": True},
        )
        return info

    def _tenant_id(self, principal: Principal, tenant: str) -> str:
        return self._tenants.get(principal, tenant).id
