"""Console sessions on a real SQLite database with a controllable clock: expiry, idle timeout,
refresh, tampering, other appliances' cookies, CSRF and the audit trail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import ConsoleSettings
from appliance.errors import AuthenticationFailed, PermissionDenied
from appliance.roles import Role
from appliance.services.audit import AuditFilter
from appliance.services.console_sessions import ConsoleSessions
from appliance.services.container import Services
from appliance.services.principal import Principal
from tests.support import make_services, make_settings

IDLE, MAX_AGE = 600, 3600


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp = tmp_path_factory.mktemp("console-sessions")
    services = make_services(make_settings(tmp / "data", f"sqlite:///{tmp / 'a.db'}"))
    yield services
    services.close()


def sessions_of(svc: Services, clock: Clock) -> ConsoleSessions:
    settings = ConsoleSettings(idle_timeout_s=IDLE, max_age_s=MAX_AGE)  # type: ignore[call-arg]
    return ConsoleSessions(svc.data_keys, svc.api_keys, svc.audit, settings, clock=clock)


def key(svc: Services, role: Role = Role.COMPLIANCE, tenant: str | None = None) -> str:
    return svc.api_keys.create(Principal.local_operator(), role=role, name="console", tenant=tenant).api_key


def test_a_session_resumes_with_its_principal_and_csrf_token(svc: Services) -> None:
    clock = Clock()
    sessions = sessions_of(svc, clock)
    opened, cookie = sessions.sign_in(key(svc))
    resumed = sessions.resume(cookie)
    assert resumed.session == opened
    assert resumed.cookie is None  # nothing to refresh yet
    sessions.check_csrf(resumed.session, opened.csrf_token)


@pytest.mark.parametrize("token", [None, "", "nope", "A" * 43])
def test_a_wrong_or_missing_csrf_token_is_refused(svc: Services, token: str | None) -> None:
    sessions = sessions_of(svc, Clock())
    opened, _ = sessions.sign_in(key(svc))
    with pytest.raises(PermissionDenied):
        sessions.check_csrf(opened, token)


def test_idle_sessions_expire_and_activity_keeps_them_alive_until_max_age(svc: Services) -> None:
    clock = Clock()
    start = clock.now
    sessions = sessions_of(svc, clock)
    _, cookie = sessions.sign_in(key(svc))
    clock.now += IDLE - 1
    refreshed = sessions.resume(cookie)
    assert refreshed.cookie is not None and refreshed.cookie != cookie
    clock.now += 2
    with pytest.raises(AuthenticationFailed, match="expired"):
        sessions.resume(cookie)  # the old cookie's last-seen time is past the idle timeout
    cookie = refreshed.cookie
    while clock.now + IDLE - 10 < start + MAX_AGE:  # active all along: never idle for long
        clock.now += IDLE - 10
        cookie = sessions.resume(cookie).cookie or cookie
    clock.now = start + MAX_AGE
    with pytest.raises(AuthenticationFailed, match="expired"):
        sessions.resume(cookie)


def test_a_cookie_from_another_appliance_or_edited_is_refused(svc: Services, tmp_path: Path) -> None:
    clock = Clock()
    other = make_services(make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'b.db'}"))
    try:
        _, foreign = sessions_of(other, clock).sign_in(key(other))
    finally:
        other.close()
    sessions = sessions_of(svc, clock)
    _, cookie = sessions.sign_in(key(svc))
    flipped = cookie[:30] + ("A" if cookie[30] != "A" else "B") + cookie[31:]
    for bad in (foreign, flipped, cookie + "A", ""):
        with pytest.raises(AuthenticationFailed):
            sessions.resume(bad)


def test_app_keys_cannot_open_a_session(svc: Services) -> None:
    tenant = svc.tenants.create(Principal.local_operator(), "console-app").slug
    with pytest.raises(PermissionDenied):
        sessions_of(svc, Clock()).sign_in(key(svc, Role.APP, tenant))


def test_deleting_the_tenant_ends_its_admins_sessions(svc: Services) -> None:
    tenant = svc.tenants.create(Principal.local_operator(), "console-gone").slug
    sessions = sessions_of(svc, Clock())
    _, cookie = sessions.sign_in(key(svc, Role.TENANT_ADMIN, tenant))
    assert sessions.resume(cookie).session.principal.tenant_slug == tenant
    svc.tenants.delete(Principal.local_operator(), tenant)
    with pytest.raises(AuthenticationFailed):
        sessions.resume(cookie)


def test_sign_in_and_sign_out_are_audited_without_secrets(svc: Services) -> None:
    sessions = sessions_of(svc, Clock())
    api_key = key(svc, Role.OPERATOR)
    opened, cookie = sessions.sign_in(api_key)
    sessions.sign_out(opened)
    with pytest.raises(AuthenticationFailed, match="signed out"):
        sessions.resume(cookie)
    page = svc.audit.query(Principal.local_operator(), AuditFilter(actor=opened.principal.key_id), limit=10)
    actions = [e.action for e in page.items]
    assert actions[:2] == ["console.sign_out", "console.sign_in"]
    text = repr(page.items)
    assert opened.csrf_token not in text
    assert api_key.split("_")[2] not in text
    assert cookie not in text
