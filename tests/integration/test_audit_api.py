"""The audit API over real HTTP (SQLite and PostgreSQL): who may read which entries, filters,
cursors, verification, and the 503 when the trail cannot be written."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import text

from appliance.roles import Role
from appliance.services.audit import audit_log_of
from appliance.services.principal import Principal
from tests.support import Stack

PROBLEM = "application/problem+json"


@dataclass
class Trail:
    a: str
    b: str
    a_admin: str
    b_admin: str
    compliance: str
    a_entries: list[int]
    b_entries: list[int]


@pytest.fixture
def trail(stack: Stack) -> Trail:
    a, b = stack.tenant("audit-a"), stack.tenant("audit-b")
    op = stack.client(stack.operator_key)
    a_id, b_id = (op.get(f"/admin/v1/tenants/{t}").json()["id"] for t in (a, b))
    log = audit_log_of(stack.services)
    a_entries = [
        log.record("chat.completion", actor="appkey-a", tenant_id=a_id, facts={"entities": {"PERSON": i}})
        for i in range(3)
    ]
    b_entries = [log.record("chat.completion", actor="appkey-b", tenant_id=b_id, outcome="blocked")]
    return Trail(
        a,
        b,
        stack.key(Role.TENANT_ADMIN, a),
        stack.key(Role.TENANT_ADMIN, b),
        stack.key(Role.COMPLIANCE),
        a_entries,
        b_entries,
    )


def _ids(page: dict[str, object]) -> list[int]:
    return [int(e["id"]) for e in page["items"]]  # type: ignore[attr-defined, index]


def test_tenant_admin_lists_only_its_own_tenants_entries(stack: Stack, trail: Trail) -> None:
    admin = stack.client(trail.a_admin)
    page = admin.get("/admin/v1/audit", params={"limit": 500})
    assert page.status_code == 200, page.text
    ids = _ids(page.json())
    assert set(trail.a_entries) <= set(ids)
    assert not set(trail.b_entries) & set(ids)
    assert {e["tenant_id"] for e in page.json()["items"]} == {page.json()["items"][0]["tenant_id"]}


@pytest.mark.parametrize("ref", ["name", "id"])
def test_tenant_admin_filtering_on_another_tenant_gets_an_empty_page(stack: Stack, trail: Trail, ref: str) -> None:
    op = stack.client(stack.operator_key)
    b_ref = trail.b if ref == "name" else op.get(f"/admin/v1/tenants/{trail.b}").json()["id"]
    r = stack.client(trail.a_admin).get("/admin/v1/audit", params={"tenant": b_ref})
    assert r.status_code == 200
    assert r.json() == {"items": [], "next_cursor": None}


def test_tenant_admin_gets_404_for_another_tenants_entry(stack: Stack, trail: Trail) -> None:
    r = stack.client(trail.a_admin).get(f"/admin/v1/audit/{trail.b_entries[0]}")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith(PROBLEM)
    assert "appkey-b" not in r.text
    own = stack.client(trail.a_admin).get(f"/admin/v1/audit/{trail.a_entries[0]}")
    assert own.status_code == 200
    assert own.json()["facts"] == {"entities": {"PERSON": 0}}


def test_tenant_admin_and_app_cannot_verify_and_app_cannot_read(stack: Stack, trail: Trail) -> None:
    assert stack.client(trail.a_admin).get("/admin/v1/audit/verify").status_code == 403
    app = stack.client(stack.key(Role.APP, trail.a))
    assert app.get("/admin/v1/audit").status_code == 403
    assert app.get(f"/admin/v1/audit/{trail.a_entries[0]}").status_code == 403


def test_compliance_reads_every_tenant_filters_and_pages(stack: Stack, trail: Trail) -> None:
    c = stack.client(trail.compliance)
    blocked = c.get("/admin/v1/audit", params={"tenant": trail.b, "outcome": "blocked"}).json()
    assert _ids(blocked) == trail.b_entries
    chats = {"tenant": trail.a, "action": "chat.completion", "limit": 2}
    first = c.get("/admin/v1/audit", params=chats).json()
    assert _ids(first) == trail.a_entries[::-1][:2]
    second = c.get("/admin/v1/audit", params={**chats, "cursor": first["next_cursor"]}).json()
    assert _ids(second) == trail.a_entries[:1]
    assert second["next_cursor"] is None
    assert c.get(f"/admin/v1/audit/{trail.b_entries[0]}").json()["actor"] == "appkey-b"


def test_bad_cursor_and_limit_are_422_problems(stack: Stack, trail: Trail) -> None:
    c = stack.client(trail.compliance)
    for params in ({"cursor": "garbage"}, {"limit": 0}, {"limit": 100000}):
        r = c.get("/admin/v1/audit", params=params)
        assert r.status_code in (400, 422), r.text
        assert r.headers["content-type"].startswith(PROBLEM)


def test_verify_endpoint_reports_an_intact_chain(stack: Stack, trail: Trail) -> None:
    for key in (trail.compliance, stack.operator_key):
        body = stack.client(key).get("/admin/v1/audit/verify").json()
        assert body["ok"] is True, body
        assert body["entries_checked"] >= 4


def test_when_audit_cannot_be_written_then_tenant_create_is_503_and_nothing_is_stored(stack: Stack) -> None:
    """Needs TenantService.create to record its audit entry in its own transaction."""
    op = stack.client(stack.operator_key)
    with stack.services.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entries RENAME TO audit_entries_away"))
    try:
        r = op.post("/admin/v1/tenants", json={"name": "never-stored"})
    finally:
        with stack.services.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_entries_away RENAME TO audit_entries"))
    assert r.status_code == 503, r.text
    assert r.json()["type"] == "urn:appliance:problem:audit-unavailable"
    assert op.get("/admin/v1/tenants/never-stored").status_code == 404
    assert audit_log_of(stack.services).verify(Principal.local_operator()).ok
