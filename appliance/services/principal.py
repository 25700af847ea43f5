"""Who is asking: the identity every service call is checked against."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.db.tenancy import bind_tenant
from appliance.errors import NotFound, PermissionDenied
from appliance.roles import Role


@dataclass(frozen=True)
class Principal:
    key_id: str | None
    role: Role
    tenant_id: str | None = None
    tenant_slug: str | None = None

    @classmethod
    def local_operator(cls) -> Principal:
        """The CLI on the appliance host: whoever can read the master key is the operator."""
        return cls(key_id=None, role=Role.OPERATOR)

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            raise PermissionDenied(f"role {self.role.value!r} may not do this")

    def require_tenant_access(self, tenant_id: str) -> None:
        """Global roles see every tenant; tenant roles only their own (others look absent)."""
        if not self.role.is_global and self.tenant_id != tenant_id:
            raise NotFound("no such tenant")


def scope_database_to(principal: Principal) -> None:
    """The rest of this request's database work is scoped to the principal's tenant (global for
    operator and compliance): on PostgreSQL with row-level security on, the database itself then
    hides every other tenant's rows (``appliance/db/tenancy.py``)."""
    bind_tenant(None if principal.role.is_global else principal.tenant_id)
