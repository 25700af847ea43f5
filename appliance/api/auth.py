"""Bearer-key authentication (middleware) and role guards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from appliance.errors import AuthenticationFailed, PermissionDenied
from appliance.roles import Role
from appliance.services.container import Services
from appliance.services.principal import Principal

PUBLIC = {"exclude_from_auth": True}


class BearerKeyAuth(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("send an API key as 'Authorization: Bearer <key>'")
        services: Services = connection.app.state.services
        token = token.strip()
        principal = services.api_keys.remembered(token)  # memory only: no worker thread needed
        if principal is None:
            principal = await anyio.to_thread.run_sync(services.api_keys.authenticate, token)
        connection.scope["user"] = principal  # read by the access log
        return AuthenticationResult(user=principal, auth=principal.key_id)


def roles(*allowed: Role) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """Guard: the authenticated principal must hold one of ``allowed``."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal: Principal = connection.user
        if principal.role not in allowed:
            raise PermissionDenied(f"role {principal.role.value!r} may not use this endpoint")

    return guard
