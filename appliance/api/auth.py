"""Authentication (middleware) and role guards.

A request authenticates with ``Authorization: Bearer <API key>``. Under ``/admin/`` and
``/console/api/`` a console session cookie also works when no such header is sent; then every
state-changing method must carry the session's CSRF token (``X-CSRF-Token``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from appliance.errors import AuthenticationFailed, PermissionDenied
from appliance.roles import Role
from appliance.services.console_sessions import COOKIE_NAME, CSRF_HEADER
from appliance.services.container import Services
from appliance.services.principal import Principal, scope_database_to

PUBLIC = {"exclude_from_auth": True}
COOKIE_PATHS = ("/admin/", "/console/api/")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REFRESHED_COOKIE = "appliance.console_cookie"
"""Scope state key: the re-sealed session cookie to send back (``api.console.console_headers``)."""


def session_cookie(request: ASGIConnection[Any, Any, Any, Any], value: str, max_age: int) -> Cookie:
    """The session cookie: HttpOnly, SameSite=Strict, Secure over TLS (or as configured)."""
    services: Services = request.app.state.services
    mode = services.settings.console.secure_cookie
    secure = mode == "always" or (mode == "auto" and request.url.scheme == "https")
    return Cookie(
        key=COOKIE_NAME,
        value=value,
        max_age=max(0, max_age),
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


class BearerKeyAuth(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        services: Services = connection.app.state.services
        if (
            not header
            and services.settings.console.enabled
            and connection.scope["path"].startswith(COOKIE_PATHS)
            and COOKIE_NAME in connection.cookies
        ):
            return await self._console_session(connection)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("send an API key as 'Authorization: Bearer <key>'")
        token = token.strip()
        principal = services.api_keys.remembered(token)  # memory only: no worker thread needed
        if principal is None:
            principal = await anyio.to_thread.run_sync(services.api_keys.authenticate, token)
        connection.scope["user"] = principal  # read by the access log
        scope_database_to(principal)
        return AuthenticationResult(user=principal, auth=principal.key_id)

    async def _console_session(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        services: Services = connection.app.state.services
        sessions = services.console_sessions
        resumed = await anyio.to_thread.run_sync(sessions.resume, connection.cookies[COOKIE_NAME])
        if connection.scope.get("method", "GET") not in SAFE_METHODS:
            sessions.check_csrf(resumed.session, connection.headers.get(CSRF_HEADER))
        if resumed.cookie is not None:
            left = int(resumed.session.expires_at - resumed.session.last_seen)
            connection.scope.setdefault("state", {})[REFRESHED_COOKIE] = session_cookie(
                connection, resumed.cookie, left
            )
        principal = resumed.session.principal
        connection.scope["user"] = principal
        scope_database_to(principal)
        return AuthenticationResult(user=principal, auth=resumed.session)


def roles(*allowed: Role) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """Guard: the authenticated principal must hold one of ``allowed``."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal: Principal = connection.user
        if principal.role not in allowed:
            raise PermissionDenied(f"role {principal.role.value!r} may not use this endpoint")

    return guard
