"""Isolation matrix: a tenant's principals never see or touch another tenant's objects."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from appliance.roles import Role
from tests.support import Stack, list_every


@dataclass
class World:
    a: str
    b: str
    a_admin: str
    b_key_id: str
    b_id: str
    a_app: str


@pytest.fixture
def world(stack: Stack) -> World:
    a, b = stack.tenant("a"), stack.tenant("b")
    b_key = stack.key(Role.APP, b)
    b_id = stack.client(stack.operator_key).get(f"/admin/v1/tenants/{b}").json()["id"]
    return World(a, b, stack.key(Role.TENANT_ADMIN, a), b_key.split("_")[1], b_id, stack.key(Role.APP, a))


def _cross_tenant_requests(w: World) -> list[tuple[str, str, dict[str, object] | None]]:
    out: list[tuple[str, str, dict[str, object] | None]] = []
    for ref in (w.b, w.b_id):
        out += [
            ("GET", f"/admin/v1/tenants/{ref}", None),
            ("GET", f"/admin/v1/tenants/{ref}/keys", None),
            ("POST", f"/admin/v1/tenants/{ref}/keys", {"role": "app", "name": "intruder"}),
            ("DELETE", f"/admin/v1/tenants/{ref}/keys/{w.b_key_id}", None),
        ]
    # B's key id through A's own tenant path must not resolve either.
    out.append(("DELETE", f"/admin/v1/tenants/{w.a}/keys/{w.b_key_id}", None))
    return out


def test_tenant_admin_of_a_gets_404_for_every_tenant_b_object(stack: Stack, world: World) -> None:
    admin = stack.client(world.a_admin)
    for method, path, body in _cross_tenant_requests(world):
        r = admin.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        body = {k: v for k, v in r.json().items() if k != "instance"}  # instance echoes the caller's own path
        assert world.b not in str(body)
        assert world.b_id not in str(body)
    # B's key still works: nothing was revoked.
    listed = list_every(stack.client(stack.operator_key), f"/admin/v1/tenants/{world.b}/keys", include_revoked="true")
    assert [k["revoked_at"] for k in listed] == [None]
    assert [k["name"] for k in listed] == ["test"]


def test_tenant_admin_lists_only_its_own_tenant(stack: Stack, world: World) -> None:
    names = [t["name"] for t in stack.client(world.a_admin).get("/admin/v1/tenants").json()]
    assert names == [world.a]


def test_tenant_admin_cannot_create_or_delete_tenants(stack: Stack, world: World) -> None:
    admin = stack.client(world.a_admin)
    assert admin.post("/admin/v1/tenants", json={"name": "mine-now"}).status_code == 403
    assert admin.delete(f"/admin/v1/tenants/{world.a}").status_code == 403
    assert admin.delete(f"/admin/v1/tenants/{world.b}").status_code == 403


ADMIN_ENDPOINTS = [
    ("POST", "/admin/v1/tenants", {"name": "x"}),
    ("GET", "/admin/v1/tenants", None),
    ("GET", "/admin/v1/tenants/{tenant}", None),
    ("DELETE", "/admin/v1/tenants/{tenant}", None),
    ("POST", "/admin/v1/tenants/{tenant}/keys", {"role": "app", "name": "x"}),
    ("GET", "/admin/v1/tenants/{tenant}/keys", None),
    ("DELETE", "/admin/v1/tenants/{tenant}/keys/{key_id}", None),
    ("POST", "/admin/v1/keys", {"role": "operator", "name": "x"}),
    ("GET", "/admin/v1/keys", None),
    ("DELETE", "/admin/v1/keys/{key_id}", None),
    ("GET", "/admin/v1/tenants/{tenant}/policy", None),
    ("POST", "/admin/v1/tenants/{tenant}/policy", {"document": "name: x\n"}),
    ("POST", "/admin/v1/tenants/{tenant}/policy/rollback", {"version": 1}),
    ("GET", "/admin/v1/tenants/{tenant}/policy/versions", None),
    ("GET", "/admin/v1/tenants/{tenant}/policy/versions/{version}", None),
    ("GET", "/admin/v1/tenants/{tenant}/policy/diff", None),
    ("POST", "/admin/v1/policies/lint", {"document": "name: x\n"}),
    ("POST", "/admin/v1/policies/preview", {"document": "name: x\n", "texts": ["hi"]}),
    ("GET", "/admin/v1/policies/schema", None),
    ("GET", "/admin/v1/policies/presets", None),
    ("GET", "/admin/v1/policies/presets/{name}", None),
    ("GET", "/admin/v1/audit", None),
    ("GET", "/admin/v1/audit/{entry_id}", None),
    ("GET", "/admin/v1/audit/verify", None),
    ("POST", "/admin/v1/audit/export", {"format": "jsonl"}),
    ("GET", "/admin/v1/operations/api-keys", None),
    ("GET", "/admin/v1/operations/data-keys", None),
    ("GET", "/admin/v1/operations/models", None),
    ("POST", "/admin/v1/tenants/{tenant}/datasets", None),
    ("GET", "/admin/v1/tenants/{tenant}/datasets", None),
    ("GET", "/admin/v1/tenants/{tenant}/datasets/{dataset}", None),
    ("DELETE", "/admin/v1/tenants/{tenant}/datasets/{dataset}", None),
    (
        "POST",
        "/admin/v1/tenants/{tenant}/finetune/jobs",
        {"dataset": "d", "task": "classifier", "output_model": "m", "target_epsilon": 1.0},
    ),
    ("GET", "/admin/v1/tenants/{tenant}/finetune/jobs", None),
    ("GET", "/admin/v1/tenants/{tenant}/finetune/jobs/{job_id}", None),
    ("POST", "/admin/v1/tenants/{tenant}/finetune/jobs/{job_id}/cancel", None),
    ("GET", "/admin/v1/tenants/{tenant}/privacy-budget", None),
    ("GET", "/admin/v1/tenants/{tenant}/models/{name}/versions", None),
    ("GET", "/admin/v1/tenants/{tenant}/models/{name}/card", None),
    ("GET", "/admin/v1/tenants/{tenant}/models/{name}/versions/{version}", None),
    ("POST", "/admin/v1/tenants/{tenant}/models/{name}/rollback", {"to": 1}),
    ("DELETE", "/admin/v1/tenants/{tenant}/models/{name}/versions/{version}", None),
]
_PLACEHOLDERS = {
    "key_id": "0000000000000000",
    "version": "1",
    "name": "default",
    "entry_id": "1",
    "dataset": "00000000-0000-0000-0000-000000000000",
    "job_id": "00000000-0000-0000-0000-000000000000",
}


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ENDPOINTS)
def test_app_key_is_forbidden_on_every_admin_endpoint(
    stack: Stack, world: World, method: str, path: str, body: dict[str, object] | None
) -> None:
    r = stack.client(world.a_app).request(method, path.format(tenant=world.a, **_PLACEHOLDERS), json=body)
    assert r.status_code == 403, r.text
    assert r.json()["type"] == "urn:appliance:problem:forbidden"


def test_every_admin_route_is_in_the_matrix(stack: Stack) -> None:
    """Adding an admin route without adding it above fails here."""
    doc = stack.client().get("/schema/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in doc["paths"].items() if p.startswith("/admin/") for m in ops}
    covered = {(m, p) for m, p, _ in ADMIN_ENDPOINTS}
    assert routes <= covered, routes - covered
