"""Tenants and keys through real HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets

from appliance.roles import Role
from tests.support import Stack

PROBLEM = "application/problem+json"


def test_operator_creates_lists_and_deletes_a_tenant(stack: Stack) -> None:
    op = stack.client(stack.operator_key)
    name = f"acme-{secrets.token_hex(3)}"
    created = op.post("/admin/v1/tenants", json={"name": name, "display_name": "Acme Corp"})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == name
    assert name in [t["name"] for t in op.get("/admin/v1/tenants").json()]
    assert op.get(f"/admin/v1/tenants/{name}").json()["display_name"] == "Acme Corp"
    assert op.delete(f"/admin/v1/tenants/{name}").status_code == 200
    gone = op.get(f"/admin/v1/tenants/{name}")
    assert gone.status_code == 404
    assert gone.headers["content-type"].startswith(PROBLEM)


def test_when_tenant_exists_then_second_create_conflicts(stack: Stack) -> None:
    name = stack.tenant()
    r = stack.client(stack.operator_key).post("/admin/v1/tenants", json={"name": name})
    assert r.status_code == 409
    assert r.json()["type"] == "urn:appliance:problem:conflict"


def test_issued_key_is_shown_once_and_works_until_revoked(stack: Stack) -> None:
    tenant = stack.tenant()
    op = stack.client(stack.operator_key)
    issued = op.post(f"/admin/v1/tenants/{tenant}/keys", json={"role": "app", "name": "chatbot"})
    assert issued.status_code == 201
    body = issued.json()
    api_key, key_id = body["api_key"], body["key"]["id"]
    assert api_key.startswith(f"apl_{key_id}_")
    listed = op.get(f"/admin/v1/tenants/{tenant}/keys").json()["items"]
    assert [k["id"] for k in listed] == [key_id]
    assert "api_key" not in listed[0]
    assert api_key not in str(listed)

    app = stack.client(api_key)
    assert app.get("/v1/models").status_code == 200
    assert op.get(f"/admin/v1/tenants/{tenant}/keys").json()["items"][0]["last_used_at"] is not None
    assert op.delete(f"/admin/v1/tenants/{tenant}/keys/{key_id}").status_code == 200
    r = app.get("/v1/models")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith(PROBLEM)


def test_expired_key_is_rejected(stack: Stack) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from appliance.db.models import ApiKey

    tenant = stack.tenant()
    key = stack.key(Role.APP, tenant)
    with stack.services.sessions() as s, s.begin():
        s.execute(
            update(ApiKey).where(ApiKey.id == key.split("_")[1]).values(expires_at=datetime.now(UTC) - timedelta(1))
        )
    assert stack.client(key).get("/v1/models").status_code == 401


def test_tenant_admin_manages_own_keys_but_cannot_mint_operator_keys(stack: Stack) -> None:
    tenant = stack.tenant()
    admin = stack.client(stack.key(Role.TENANT_ADMIN, tenant))
    r = admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"role": "app", "name": "svc"})
    assert r.status_code == 201
    r = admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"role": "operator", "name": "x"})
    assert r.status_code == 403
    assert admin.post("/admin/v1/keys", json={"role": "operator", "name": "x"}).status_code == 403


def test_operator_manages_global_keys(stack: Stack) -> None:
    op = stack.client(stack.operator_key)
    r = op.post("/admin/v1/keys", json={"role": "compliance", "name": "dpo"})
    assert r.status_code == 201
    key_id = r.json()["key"]["id"]
    assert key_id in [k["id"] for k in op.get("/admin/v1/keys").json()["items"]]
    compliance = stack.client(r.json()["api_key"])
    assert compliance.get("/admin/v1/tenants").status_code == 200
    assert compliance.post("/admin/v1/tenants", json={"name": "nope"}).status_code == 403
    assert op.delete(f"/admin/v1/keys/{key_id}").json()["revoked_at"] is not None
    assert compliance.get("/admin/v1/tenants").status_code == 401
    assert key_id not in [k["id"] for k in op.get("/admin/v1/keys").json()["items"]]
    revoked = op.get("/admin/v1/keys", params={"include_revoked": "true"}).json()["items"]
    assert [k["revoked_at"] is not None for k in revoked if k["id"] == key_id] == [True]


def test_global_role_key_may_not_name_a_tenant(stack: Stack) -> None:
    tenant = stack.tenant()
    r = stack.client(stack.operator_key).post(
        f"/admin/v1/tenants/{tenant}/keys", json={"role": "operator", "name": "x"}
    )
    assert r.status_code == 422
