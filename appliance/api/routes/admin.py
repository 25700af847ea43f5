"""Admin API: tenants (operator) and API keys (operator, or a tenant admin for its own tenant)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from appliance.api.auth import roles
from appliance.api.deps import Svc
from appliance.roles import Role
from appliance.services.api_keys import IssuedKey, KeyView
from appliance.services.paging import DEFAULT_PAGE, MAX_PAGE, Page
from appliance.services.principal import Principal
from appliance.services.tenants import TenantView

AuthedRequest = Request[Principal, Any, Any]


class TenantCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=63, description="Slug: lowercase letters, digits, '-'.")]
    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    role: Role
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    expires_at: datetime | None = None


class TenantOut(msgspec.Struct):
    id: str
    name: str
    display_name: str
    created_at: datetime


class KeyOut(msgspec.Struct):
    id: str
    tenant: str | None
    role: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyPageOut(msgspec.Struct):
    items: list[KeyOut]
    next_cursor: str | None


class IssuedKeyOut(msgspec.Struct):
    key: KeyOut
    api_key: str = msgspec.field(name="api_key")


def _tenant(t: TenantView) -> TenantOut:
    return TenantOut(t.id, t.slug, t.display_name, t.created_at)


def _key(k: KeyView) -> KeyOut:
    return KeyOut(k.id, k.tenant, k.role, k.name, k.created_at, k.expires_at, k.last_used_at, k.revoked_at)


def _key_page(page: Page[KeyView]) -> KeyPageOut:
    return KeyPageOut([_key(k) for k in page.items], page.next_cursor)


def _issued(k: IssuedKey) -> IssuedKeyOut:
    return IssuedKeyOut(_key(k.key), k.api_key)


TenantRef = Annotated[str, PathParameter(max_length=63, description="Tenant name or id")]
KeyRef = Annotated[str, PathParameter(max_length=24)]
INT32_MAX = 2**31 - 1
"""The largest version number a database column holds; a larger one is refused as invalid
(it could never exist), not passed down to fail as an overflow in the driver."""
VersionNumber = Annotated[int, PathParameter(ge=1, le=INT32_MAX)]
IncludeRevoked = Annotated[bool, QueryParameter(description="Also list revoked keys.")]
Cursor = Annotated[str | None, QueryParameter(max_length=200, description="next_cursor of the previous page.")]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="Items per page.")]


class TenantController(Controller):
    path = "/admin/v1/tenants"
    tags = ["admin: tenants"]

    @post("/", guards=[roles(Role.OPERATOR)], sync_to_thread=True)
    def create_tenant(self, request: AuthedRequest, services: Svc, data: JSONBody[TenantCreate]) -> TenantOut:
        return _tenant(services.tenants.create(request.user, data.name, data.display_name))

    @get("/", guards=[roles(Role.OPERATOR, Role.COMPLIANCE, Role.TENANT_ADMIN)], sync_to_thread=True)
    def list_tenants(self, request: AuthedRequest, services: Svc) -> list[TenantOut]:
        return [_tenant(t) for t in services.tenants.list(request.user)]

    @get("/{tenant:str}", guards=[roles(Role.OPERATOR, Role.COMPLIANCE, Role.TENANT_ADMIN)], sync_to_thread=True)
    def get_tenant(self, request: AuthedRequest, services: Svc, tenant: TenantRef) -> TenantOut:
        return _tenant(services.tenants.get(request.user, tenant))

    @delete("/{tenant:str}", guards=[roles(Role.OPERATOR)], sync_to_thread=True, status_code=200)
    def delete_tenant(self, request: AuthedRequest, services: Svc, tenant: TenantRef) -> TenantOut:
        """Crypto-shreds the tenant: its data keys are destroyed, then its rows."""
        return _tenant(services.tenants.delete(request.user, tenant))

    @post("/{tenant:str}/keys", guards=[roles(Role.OPERATOR, Role.TENANT_ADMIN)], sync_to_thread=True)
    def create_key(
        self, request: AuthedRequest, services: Svc, tenant: TenantRef, data: JSONBody[KeyCreate]
    ) -> IssuedKeyOut:
        """The response holds the secret; it is shown this once and never stored."""
        issued = services.api_keys.create(
            request.user, role=data.role, name=data.name, tenant=tenant, expires_at=data.expires_at
        )
        return _issued(issued)

    @get("/{tenant:str}/keys", guards=[roles(Role.OPERATOR, Role.COMPLIANCE, Role.TENANT_ADMIN)], sync_to_thread=True)
    def list_keys(
        self,
        request: AuthedRequest,
        services: Svc,
        tenant: TenantRef,
        include_revoked: IncludeRevoked = False,
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
    ) -> KeyPageOut:
        """Oldest first, one page at a time; revoked keys only when asked for."""
        return _key_page(
            services.api_keys.list(request.user, tenant, include_revoked=include_revoked, cursor=cursor, limit=limit)
        )

    @delete(
        "/{tenant:str}/keys/{key_id:str}",
        guards=[roles(Role.OPERATOR, Role.TENANT_ADMIN)],
        sync_to_thread=True,
        status_code=200,
    )
    def revoke_key(self, request: AuthedRequest, services: Svc, tenant: TenantRef, key_id: KeyRef) -> KeyOut:
        return _key(services.api_keys.revoke(request.user, key_id, tenant))


class GlobalKeyController(Controller):
    """Operator and compliance keys, which belong to no tenant."""

    path = "/admin/v1/keys"
    tags = ["admin: keys"]
    guards = [roles(Role.OPERATOR)]

    @post("/", sync_to_thread=True)
    def create_global_key(self, request: AuthedRequest, services: Svc, data: JSONBody[KeyCreate]) -> IssuedKeyOut:
        return _issued(
            services.api_keys.create(request.user, role=data.role, name=data.name, expires_at=data.expires_at)
        )

    @get("/", sync_to_thread=True)
    def list_global_keys(
        self,
        request: AuthedRequest,
        services: Svc,
        include_revoked: IncludeRevoked = False,
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
    ) -> KeyPageOut:
        """Oldest first, one page at a time; revoked keys only when asked for."""
        return _key_page(
            services.api_keys.list(request.user, include_revoked=include_revoked, cursor=cursor, limit=limit)
        )

    @delete("/{key_id:str}", sync_to_thread=True, status_code=200)
    def revoke_global_key(self, request: AuthedRequest, services: Svc, key_id: KeyRef) -> KeyOut:
        return _key(services.api_keys.revoke(request.user, key_id))
