"""The admin console over real HTTP: the session cookie, CSRF, CSP and same-origin assets.

One live server (SQLite) for the module; each test signs in with its own keys and tenants.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest

from appliance.api.console import PAGES
from appliance.roles import Role
from appliance.services.audit import AuditFilter
from appliance.services.console_sessions import COOKIE_NAME, CSRF_HEADER
from appliance.services.principal import Principal
from tests.support import Stack, live_stack, make_services, make_settings

POLICY = "extends: default\nname: console-security\n"
# Anything that would make a browser reach another origin: absolute or protocol-relative URLs.
EXTERNAL = re.compile(
    r"https?://|(?:src|href|action)\s*=\s*[\"']?//|url\(\s*[\"']?//|from\s+[\"']//|import\(\s*[\"']//"
)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("console-http")
    with live_stack(make_services(make_settings(tmp / "data", f"sqlite:///{tmp / 'a.db'}"))) as stack:
        yield stack


def _browser(stack: Stack) -> httpx.Client:
    c = httpx.Client(base_url=stack.base_url, timeout=30, follow_redirects=False)
    stack.clients.append(c)
    return c


def sign_in(stack: Stack, key: str) -> tuple[httpx.Client, str]:
    """A cookie-holding client signed in with ``key`` and the session's CSRF token."""
    c = _browser(stack)
    r = c.post("/console/api/session", json={"api_key": key})
    assert r.status_code == 201, r.text
    return c, r.json()["csrf_token"]


def _set_cookie(r: httpx.Response) -> SimpleCookie:
    jar = SimpleCookie()
    jar.load(r.headers["set-cookie"])
    return jar


def test_sign_in_cookie_is_httponly_samesite_strict_and_not_secure_over_plain_http(console: Stack) -> None:
    r = _browser(console).post("/console/api/session", json={"api_key": console.key(Role.COMPLIANCE)})
    assert r.status_code == 201
    morsel = _set_cookie(r)[COOKIE_NAME]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    assert morsel["path"] == "/"
    assert not morsel["secure"]
    assert 0 < int(morsel["max-age"]) <= 8 * 3600
    assert "csrf_token" in r.json()
    assert r.json()["csrf_token"] not in r.headers["set-cookie"]  # the cookie is sealed, not readable


def test_sign_in_over_tls_marks_the_cookie_secure(console: Stack) -> None:
    # uvicorn trusts X-Forwarded-Proto from loopback, as it would from a local TLS proxy.
    c = _browser(console)
    r = c.post(
        "/console/api/session",
        json={"api_key": console.key(Role.COMPLIANCE)},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert r.status_code == 201
    assert _set_cookie(r)[COOKIE_NAME]["secure"] is True


@pytest.mark.parametrize(
    ("role", "status"),
    [(Role.APP, 403), (Role.COMPLIANCE, 201), (Role.OPERATOR, 201), (Role.TENANT_ADMIN, 201)],
)
def test_only_console_roles_may_sign_in(console: Stack, role: Role, status: int) -> None:
    tenant = console.tenant("roles") if not role.is_global else None
    r = _browser(console).post("/console/api/session", json={"api_key": console.key(role, tenant)})
    assert r.status_code == status, r.text
    assert ("set-cookie" in r.headers) is (status == 201)


def test_a_wrong_key_is_refused_and_audited(console: Stack) -> None:
    r = _browser(console).post("/console/api/session", json={"api_key": "apl_0123456789abcdef_" + "x" * 43})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "set-cookie" not in r.headers
    failures = console.services.audit.query(Principal.local_operator(), AuditFilter(action="auth.failure"), limit=5)
    assert any(e.object == "0123456789abcdef" for e in failures.items)


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"Sec-Fetch-Site": "cross-site"}, "another site"),
        ({"Sec-Fetch-Site": "same-site"}, "another site"),
        ({"Sec-Fetch-Site": "cross-site", "Origin": "{base}"}, "another site"),
        ({"Origin": "http://evil.example"}, "another origin"),
        ({"Origin": "{base}.evil.example"}, "another origin"),
        ({"Origin": "null"}, "another origin"),
        ({"Origin": "http://127.0.0.1:1"}, "another origin"),
    ],
    ids=["cross-site", "same-site", "cross-site-with-our-origin", "foreign-origin", "look-alike", "opaque", "port"],
)
def test_a_sign_in_from_another_site_is_refused_before_the_key_is_checked(
    console: Stack, headers: dict[str, str], why: str
) -> None:
    key = console.key(Role.COMPLIANCE)
    sent = {k: v.format(base=console.base_url) for k, v in headers.items()}
    r = _browser(console).post("/console/api/session", json={"api_key": key}, headers=sent)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert why in r.json()["detail"]
    assert "set-cookie" not in r.headers
    opened = AuditFilter(action="console.sign_in", actor=key.split("_")[1])
    assert console.services.audit.query(Principal.local_operator(), opened, limit=5).items == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "{base}"},
        {"Origin": "{base}", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "https://console.example", "Sec-Fetch-Site": "same-origin"},  # a proxy rewrote Host
        {"Sec-Fetch-Site": "none"},
    ],
    ids=["script", "same-origin", "browser", "behind-a-proxy", "typed"],
)
def test_a_sign_in_from_the_consoles_own_page_or_a_script_is_accepted(console: Stack, headers: dict[str, str]) -> None:
    sent = {k: v.format(base=console.base_url) for k, v in headers.items()}
    r = _browser(console).post("/console/api/session", json={"api_key": console.key(Role.COMPLIANCE)}, headers=sent)
    assert r.status_code == 201, r.text
    assert COOKIE_NAME in _set_cookie(r)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/console/api/session"),
        ("DELETE", "/console/api/session"),
        ("GET", "/admin/v1/tenants/"),
        ("GET", "/admin/v1/audit/"),
        ("POST", "/admin/v1/policies/lint"),
    ],
)
def test_without_the_session_cookie_the_api_refuses(console: Stack, method: str, path: str) -> None:
    r = _browser(console).request(method, path, json={"document": POLICY} if method == "POST" else None)
    assert r.status_code == 401, r.text


def test_a_state_change_without_the_csrf_token_is_refused_and_changes_nothing(console: Stack) -> None:
    tenant = console.tenant("csrf")
    c, csrf = sign_in(console, console.key(Role.COMPLIANCE))
    path = f"/admin/v1/tenants/{tenant}/policy/"
    # One changed character, never the token itself (its last character is often "A" already).
    tampered = ("B" if csrf[0] == "A" else "A") + csrf[1:]
    for headers in ({}, {CSRF_HEADER: ""}, {CSRF_HEADER: "x" * 43}, {CSRF_HEADER: tampered}):
        r = c.post(path, json={"document": POLICY, "comment": "forged"}, headers=headers)
        assert r.status_code == 403, r.text
        assert "CSRF" in r.json()["detail"]
    assert c.get(f"{path}versions").json()["items"] == []  # reads need no token; nothing was applied
    ok = c.post(path, json={"document": POLICY, "comment": "real"}, headers={CSRF_HEADER: csrf})
    assert ok.status_code == 201, ok.text
    assert ok.json()["author"] == c.get("/console/api/session").json()["key_id"]


def test_sign_out_needs_the_token_and_then_the_cookie_is_refused(console: Stack) -> None:
    c, csrf = sign_in(console, console.key(Role.COMPLIANCE))
    cookie = c.cookies[COOKIE_NAME]
    assert c.delete("/console/api/session").status_code == 403
    r = c.delete("/console/api/session", headers={CSRF_HEADER: csrf})
    assert r.status_code == 200
    assert _set_cookie(r)[COOKIE_NAME]["max-age"] == "0"
    replay = _browser(console)
    replay.cookies.set(COOKIE_NAME, cookie)
    assert replay.get("/console/api/session").status_code == 401
    assert replay.get("/admin/v1/tenants/").status_code == 401


def test_revoking_the_key_ends_its_console_sessions(console: Stack) -> None:
    key = console.key(Role.COMPLIANCE)
    c, _ = sign_in(console, key)
    assert c.get("/admin/v1/tenants/").status_code == 200
    key_id = key.split("_")[1]
    assert console.client(console.operator_key).delete(f"/admin/v1/keys/{key_id}").status_code == 200
    assert c.get("/admin/v1/tenants/").status_code == 401


@pytest.mark.parametrize(
    "mangle",
    [
        lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"),
        lambda v: v[:20],
        lambda v: "not-base64!",
        lambda v: "x" * 5000,
    ],
    ids=["edited", "truncated", "garbage", "oversized"],
)
def test_a_tampered_cookie_is_refused(console: Stack, mangle: Callable[[str], str]) -> None:
    c, _ = sign_in(console, console.key(Role.COMPLIANCE))
    forged = _browser(console)
    forged.cookies.set(COOKIE_NAME, mangle(c.cookies[COOKIE_NAME]))
    r = forged.get("/admin/v1/tenants/")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")


def test_the_cookie_does_not_authenticate_model_calls(console: Stack) -> None:
    c, _ = sign_in(console, console.key(Role.OPERATOR))
    assert c.get("/v1/models").status_code == 401


def test_a_tenant_admin_session_sees_only_its_tenant(console: Stack) -> None:
    mine, other = console.tenant("mine"), console.tenant("other")
    c, _ = sign_in(console, console.key(Role.TENANT_ADMIN, mine))
    assert [t["name"] for t in c.get("/admin/v1/tenants/").json()] == [mine]
    assert c.get(f"/admin/v1/tenants/{mine}/policy/").status_code == 200
    theirs = c.get(f"/admin/v1/tenants/{other}/policy/")
    missing = c.get("/admin/v1/tenants/no-such-tenant/policy/")
    assert theirs.status_code == missing.status_code == 404
    strip = {"instance", "request_id"}
    assert {k: v for k, v in theirs.json().items() if k not in strip} == {
        k: v for k, v in missing.json().items() if k not in strip
    }


def _served() -> list[str]:
    """Every console page and every asset shipped for them."""
    paths = ["/console/login", *(f"/console/{p}" for p in PAGES)]
    assets = Path(__file__).parents[2] / "appliance" / "api" / "console_static"
    paths += [f"/console/static/{p.name}" for p in sorted(assets.iterdir()) if not p.name.startswith("_")]
    return paths


def test_every_console_page_and_asset_carries_a_strict_csp(console: Stack) -> None:
    c, _ = sign_in(console, console.key(Role.OPERATOR))
    for path in [*_served(), "/console", "/console/nowhere", "/console/static/missing.js"]:
        r = c.get(path)
        assert r.status_code in (200, 302, 404), (path, r.status_code)
        csp = r.headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp, path
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, path
        assert "frame-ancestors 'none'" in csp, path
        assert r.headers["x-content-type-options"] == "nosniff", path


def test_no_console_page_or_asset_reaches_another_origin_or_runs_inline_script(console: Stack) -> None:
    c, _ = sign_in(console, console.key(Role.OPERATOR))
    served = _served()
    assert len(served) >= 10
    for path in served:
        r = c.get(path)
        assert r.status_code == 200, path
        assert not EXTERNAL.search(r.text), (path, EXTERNAL.search(r.text))
        if path.endswith((".html", "login")) or "/static/" not in path:
            for script in re.findall(r"<script\b[^>]*>(.*?)</script>", r.text, re.S):
                assert script.strip() == "", f"inline script in {path}"
            assert not re.search(r"\son[a-z]+\s*=", r.text), f"inline event handler in {path}"
            assert "style=" not in r.text, f"inline style in {path}"


def test_pages_send_a_signed_out_visitor_to_sign_in(console: Stack) -> None:
    c = _browser(console)
    for page in PAGES:
        r = c.get(f"/console/{page}")
        assert r.status_code in (302, 303), page
        assert r.headers["location"] == f"/console/login?next={page}"
    assert c.get("/console/static/_layout.html").status_code == 404  # templates are not assets
    assert c.get("/console/static/..%2Fconsole.py").status_code == 404


def test_a_disabled_console_serves_nothing_and_ignores_cookies(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'a.db'}", console={"enabled": False})
    with live_stack(make_services(settings)) as stack:
        c = _browser(stack)
        assert c.get("/console/login").status_code == 404
        assert c.post("/console/api/session", json={"api_key": stack.key(Role.COMPLIANCE)}).status_code in (401, 404)
        c.cookies.set(COOKIE_NAME, "anything")
        assert c.get("/admin/v1/tenants/").status_code == 401
