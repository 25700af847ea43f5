"""Who may do what: the roles every principal carries.

A domain notion, not a storage one: the API, the CLI and the services all speak it, and
the database stores its value. It lives here, below every layer, so the doors can name a
role without reaching into ``appliance.db``.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Role"]


class Role(StrEnum):
    OPERATOR = "operator"
    COMPLIANCE = "compliance"
    TENANT_ADMIN = "tenant_admin"
    APP = "app"

    @property
    def is_global(self) -> bool:
        """Operator and compliance principals span tenants; the others belong to one."""
        return self in (Role.OPERATOR, Role.COMPLIANCE)
