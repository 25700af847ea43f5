"""Bad input gets a clear 4xx problem and writes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from appliance.db.models import ApiKey, Tenant
from tests.support import Stack


def _counts(stack: Stack) -> tuple[int, int]:
    with stack.services.sessions() as s:
        return s.scalar(select(func.count()).select_from(Tenant)) or 0, s.scalar(
            select(func.count()).select_from(ApiKey)
        ) or 0


BAD_TENANT_BODIES = [
    pytest.param(b'{"name": "acme"', 400, "malformed-json", id="truncated-json"),
    pytest.param(b"not json at all", 400, "malformed-json", id="not-json"),
    pytest.param(b'{"name": 5}', 422, "validation-error", id="wrong-type"),
    pytest.param(b'{"name": "acme", "owner": "x"}', 422, "validation-error", id="unknown-field"),
    pytest.param(b"{}", 422, "validation-error", id="missing-field"),
    pytest.param(b'{"name": "Not A Slug!"}', 422, "invalid-input", id="bad-slug"),
    pytest.param(b'{"name": ""}', 422, "validation-error", id="empty-name"),
    pytest.param(b"[1, 2]", 422, "validation-error", id="array-body"),
]


@pytest.mark.parametrize(("body", "status", "slug"), BAD_TENANT_BODIES)
def test_bad_tenant_body_is_a_problem_and_writes_nothing(stack: Stack, body: bytes, status: int, slug: str) -> None:
    before = _counts(stack)
    r = stack.client(stack.operator_key).post(
        "/admin/v1/tenants", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == f"urn:appliance:problem:{slug}"
    assert "Traceback" not in r.text
    assert _counts(stack) == before


BAD_KEY_BODIES = [
    pytest.param({"role": "root", "name": "x"}, id="unknown-role"),
    pytest.param({"role": "app", "name": "x", "expires_at": "yesterday"}, id="bad-date"),
    pytest.param({"role": "app", "name": "x", "expires_at": "2001-01-01T00:00:00Z"}, id="past-expiry"),
    pytest.param({"role": "app", "name": "x" * 201}, id="long-name"),
    pytest.param({"role": "app"}, id="no-name"),
]


@pytest.mark.parametrize("body", BAD_KEY_BODIES)
def test_bad_key_body_is_422_and_issues_nothing(stack: Stack, body: dict[str, object]) -> None:
    tenant = stack.tenant()
    before = _counts(stack)
    r = stack.client(stack.operator_key).post(f"/admin/v1/tenants/{tenant}/keys", json=body)
    assert r.status_code == 422, r.text
    assert _counts(stack) == before


def test_oversized_body_is_413(stack: Stack) -> None:
    before = _counts(stack)
    big = b'{"name": "' + b"a" * (stack.services.settings.server.max_body_bytes + 10) + b'"}'
    r = stack.client(stack.operator_key).post(
        "/admin/v1/tenants", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["type"] == "urn:appliance:problem:body-too-large"
    assert _counts(stack) == before


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "bearer  x", "Basic dXNlcjpwYXNz", "Bearer apl_x_y", "Bearer apl_0000000000000000_" + "A" * 43],
)
def test_malformed_or_unknown_credentials_are_401(stack: Stack, header: str) -> None:
    r = stack.client().get("/v1/models", headers={"Authorization": header} if header else {})
    assert r.status_code == 401
    assert r.json()["type"] == "urn:appliance:problem:unauthenticated"


def test_tampered_secret_of_a_real_key_is_401(stack: Stack) -> None:
    from appliance.roles import Role

    key = stack.key(Role.APP, stack.tenant())
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert stack.client(forged).get("/v1/models").status_code == 401
