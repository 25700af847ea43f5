"""The admin web console over HTTP: its pages and assets (shipped in the package), the session
endpoints, and the headers every console response carries.

Thin on purpose: sessions, CSRF tokens and expiry live in ``services.console_sessions``; the
pages call the same admin API as every other client, authenticated by the session cookie
(see ``api/auth.py``). Every asset ships in ``console_static/``: nothing is loaded from
another origin, so the Content-Security-Policy allows ``'self'`` only and no inline script.
"""

from __future__ import annotations

import functools
import mimetypes
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import Cookie
from litestar.params import JSONBody, PathParameter
from litestar.response import Redirect
from litestar.types import ControllerRouterHandler, Message, Scope

from appliance.api.auth import PUBLIC, REFRESHED_COOKIE, session_cookie
from appliance.api.deps import Svc
from appliance.errors import ApplianceError, AuthenticationFailed, NotFound, PermissionDenied
from appliance.services.console_sessions import COOKIE_NAME, ConsoleSession
from appliance.services.container import Services

PREFIX = "/console"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "cache-control": "no-store",
}
PAGES: dict[str, str] = {
    "policies": "Policies",
    "audit": "Audit trail",
    "budgets": "Privacy budgets and fine-tuning",
    "operations": "Operations",
}
_ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}


def _asset_dir() -> Any:
    return resources.files("appliance.api") / "console_static"


@functools.cache
def _asset(name: str) -> tuple[bytes, str]:
    """An asset by file name; only files shipped in ``console_static`` (no paths) exist."""
    files = {p.name: p for p in _asset_dir().iterdir() if p.is_file() and not p.name.startswith("_")}
    if name not in files:
        raise NotFound("no such console asset")
    suffix = "." + name.rsplit(".", 1)[-1]
    media = _ASSET_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return files[name].read_bytes(), media


@functools.cache
def _page(name: str) -> str:
    """A page: the shared layout around the page's own main content."""
    layout = str((_asset_dir() / "_layout.html").read_text("utf-8"))
    main = str((_asset_dir() / f"_{name}.html").read_text("utf-8"))
    title = PAGES.get(name, "Sign in")
    return layout.replace("{{title}}", title).replace("{{page}}", name).replace("{{main}}", main)


async def console_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: security headers on every console response, and the re-sealed
    session cookie on any response whose request asked for one."""
    if message["type"] != "http.response.start":
        return
    headers = list(message.get("headers", []))
    if scope.get("path", "").startswith(PREFIX):
        present = {k.lower() for k, _ in headers}
        headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present]
    refreshed = (scope.get("state") or {}).get(REFRESHED_COOKIE)
    if isinstance(refreshed, Cookie):
        headers.append(refreshed.to_encoded_header())
    message["headers"] = headers


async def _signed_in(request: Request[Any, Any, Any]) -> ConsoleSession | None:
    cookie = request.cookies.get(COOKIE_NAME)
    if not cookie:
        return None
    services: Services = request.app.state.services
    try:
        return (await anyio.to_thread.run_sync(services.console_sessions.resume, cookie)).session
    except ApplianceError:
        return None


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _authority(scheme: str, netloc: str) -> str:
    """``host[:port]`` lowercased, without the scheme's default port."""
    netloc = netloc.lower()
    host, colon, port = netloc.rpartition(":")
    if not colon or not port.isdigit():  # no port ("[::1]" ends in "1]")
        return netloc
    return host if port == _DEFAULT_PORTS.get(scheme) else netloc


def refuse_cross_site_sign_in(headers: Any) -> None:
    """Login CSRF: another site's page must not sign a visitor's browser in (with the
    attacker's key, so that what the visitor then does lands in the attacker's session).

    A browser says where a request comes from: ``Sec-Fetch-Site`` (set by the browser, a page
    cannot forge it) and ``Origin``. The console's own page sends ``same-origin`` and its own
    origin. Anything from another site is refused; an ``Origin`` that is not this host is
    refused unless the browser itself vouched ``same-origin`` (a proxy that rewrites ``Host``
    then still works). Scripts and the CLI send neither header and are not affected.
    """
    site = (headers.get("sec-fetch-site") or "").lower()
    if site in ("cross-site", "same-site"):
        raise PermissionDenied("sign-in from another site's page is refused; open the console at this address")
    origin = headers.get("origin")
    if origin is None or site == "same-origin":
        return
    parts = urlsplit(origin)
    host = headers.get("host") or ""
    if origin == "null" or not parts.netloc or _authority(parts.scheme, parts.netloc) != _authority(parts.scheme, host):
        raise PermissionDenied("sign-in from another origin is refused; open the console at this address")


class SignIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    api_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class SessionOut(msgspec.Struct):
    role: str
    tenant: str | None
    key_id: str | None
    csrf_token: str
    idle_timeout_s: int
    idle_expires_at: float
    expires_at: float
    features: dict[str, bool]


def _features(request: Request[Any, Any, Any]) -> dict[str, bool]:
    """What the pages may offer: an API that this build does not serve shows as unavailable."""
    paths = {r.path for r in request.app.routes}
    return {
        "privacy_budgets": "/admin/v1/tenants/{tenant:str}/privacy-budget" in paths,
        "fine_tuning": any(p.startswith("/admin/v1/tenants/{tenant:str}/finetune/jobs") for p in paths),
    }


def _session_out(request: Request[Any, Any, Any], s: ConsoleSession) -> SessionOut:
    services: Services = request.app.state.services
    return SessionOut(
        role=s.principal.role.value,
        tenant=s.principal.tenant_slug,
        key_id=s.principal.key_id,
        csrf_token=s.csrf_token,
        idle_timeout_s=services.console_sessions.idle_timeout_s,
        idle_expires_at=s.idle_expires_at,
        expires_at=s.expires_at,
        features=_features(request),
    )


def _console_session(request: Request[Any, Any, Any]) -> ConsoleSession:
    if not isinstance(request.auth, ConsoleSession):
        raise AuthenticationFailed("this endpoint needs a console session cookie (sign in at /console/login)")
    return request.auth


class SessionController(Controller):
    """One controller, so Litestar registers the three methods of this path together."""

    path = f"{PREFIX}/api/session"
    tags = ["console"]

    @post("/", opt=PUBLIC, sync_to_thread=True, status_code=201)
    def sign_in(self, request: Request[Any, Any, Any], services: Svc, data: JSONBody[SignIn]) -> Response[SessionOut]:
        """Exchange a compliance, operator or tenant_admin API key for a session cookie."""
        refuse_cross_site_sign_in(request.headers)
        session, cookie = services.console_sessions.sign_in(data.api_key.strip())
        max_age = int(session.expires_at - session.issued_at)
        return Response(
            _session_out(request, session), status_code=201, cookies=[session_cookie(request, cookie, max_age)]
        )

    @get("/", sync_to_thread=False)
    def current_session(self, request: Request[Any, Any, Any]) -> SessionOut:
        """Who is signed in, the CSRF token to send with state changes, and what the pages may offer."""
        return _session_out(request, _console_session(request))

    @delete("/", sync_to_thread=True, status_code=200)
    def sign_out(self, request: Request[Any, Any, Any], services: Svc) -> Response[dict[str, bool]]:
        services.console_sessions.sign_out(_console_session(request))
        request.scope.get("state", {}).pop(REFRESHED_COOKIE, None)  # no refresh beside the removal
        return Response({"signed_out": True}, cookies=[session_cookie(request, "", 0)])


@get(PREFIX, opt=PUBLIC, include_in_schema=False)
async def console_home(request: Request[Any, Any, Any]) -> Redirect:
    session = await _signed_in(request)
    if session is None:
        return Redirect(f"{PREFIX}/login")
    return Redirect(f"{PREFIX}/{'operations' if session.principal.role.value == 'operator' else 'policies'}")


@get(f"{PREFIX}/login", opt=PUBLIC, sync_to_thread=False, include_in_schema=False)
def login_page() -> Response[str]:
    return Response(_page("login"), media_type="text/html; charset=utf-8")


@get(f"{PREFIX}/{{page:str}}", opt=PUBLIC, include_in_schema=False)
async def console_page(
    request: Request[Any, Any, Any], page: Annotated[str, PathParameter(max_length=32)]
) -> Response[str] | Redirect:
    """A page when signed in; otherwise the sign-in page, which comes back here afterwards."""
    if page not in PAGES:
        raise NotFound("no such console page")
    if await _signed_in(request) is None:
        return Redirect(f"{PREFIX}/login?next={page}")
    return Response(_page(page), media_type="text/html; charset=utf-8")


@get(f"{PREFIX}/static/{{name:str}}", opt=PUBLIC, sync_to_thread=False, include_in_schema=False)
def console_asset(name: Annotated[str, PathParameter(max_length=64)]) -> Response[bytes]:
    body, media = _asset(name)
    return Response(body, media_type=media, headers={"cache-control": "no-cache"})


HANDLERS: list[ControllerRouterHandler] = [SessionController, console_home, login_page, console_page, console_asset]
