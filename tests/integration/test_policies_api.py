"""Policy versions through real HTTP on SQLite and PostgreSQL: apply, history, diff,
rollback, scoping, and bad policies that apply nothing."""

from __future__ import annotations

import pytest

from appliance.roles import Role
from appliance.services.principal import Principal
from tests.support import Stack
from tests.unit.policy.test_policy_loading import BAD_POLICIES

V1 = "extends: default\nname: v1\npii:\n  entities:\n    PERSON: {action: replace}\n"
V2 = "extends: default\nname: v2\npii:\n  entities:\n    PERSON: {action: redact}\n"


@pytest.fixture
def officer(stack: Stack) -> str:
    return stack.key(Role.COMPLIANCE)


def test_apply_history_diff_and_rollback(stack: Stack, officer: str) -> None:
    tenant = stack.tenant()
    c = stack.client(officer)
    base = f"/admin/v1/tenants/{tenant}/policy"
    assert c.get(base).json()["version"] is None  # the default preset until something is applied

    r1 = c.post(base, json={"document": V1, "comment": "names as tags"})
    assert r1.status_code == 201, r1.text
    assert r1.json()["version"] == 1 and r1.json()["active"] is True
    assert c.post(base, json={"document": V2, "comment": "names gone"}).json()["version"] == 2
    active = c.get(base).json()
    assert active["version"] == 2
    assert active["policy"]["pii"]["entities"]["PERSON"]["action"] == "redact"

    history = c.get(f"{base}/versions").json()["items"]
    assert [(v["version"], v["active"], v["comment"]) for v in history] == [
        (1, False, "names as tags"),
        (2, True, "names gone"),
    ]
    assert c.get(f"{base}/versions/1").json()["document"] == V1

    diff = c.get(f"{base}/diff", params={"from": 1, "to": 2}).json()
    paths = {ch["path"]: (ch["old"], ch["new"]) for ch in diff["changes"]}
    assert paths["pii.entities.PERSON.action"] == ("replace", "redact")
    assert "-name: v1" in diff["text_diff"] and "+name: v2" in diff["text_diff"]

    rolled = c.post(f"{base}/rollback", json={"version": 1})
    assert rolled.status_code == 201
    assert rolled.json()["version"] == 3
    assert rolled.json()["comment"] == "rollback to version 1"
    tenant_id = stack.services.tenants.get(Principal.local_operator(), tenant).id
    assert stack.services.policies.effective(tenant_id).policy.pii.rule_for("PERSON").action.value == "replace"


@pytest.mark.parametrize(
    ("text", "field"), [(b[1], b[2]) for b in BAD_POLICIES[:12]], ids=[b[0] for b in BAD_POLICIES[:12]]
)
def test_bad_policy_gets_422_with_field_and_applies_nothing(stack: Stack, officer: str, text: str, field: str) -> None:
    tenant = stack.tenant()
    c = stack.client(officer)
    r = c.post(f"/admin/v1/tenants/{tenant}/policy", json={"document": text, "comment": "x"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"] == "urn:appliance:problem:invalid-policy"
    assert any(e["field"] == field for e in body["errors"]), body
    assert c.get(f"/admin/v1/tenants/{tenant}/policy/versions").json() == {"items": [], "next_cursor": None}
    assert c.get(f"/admin/v1/tenants/{tenant}/policy").json()["version"] is None


def test_lint_endpoint_reports_issues_without_storing(stack: Stack, officer: str) -> None:
    c = stack.client(officer)
    ok = c.post("/admin/v1/policies/lint", json={"document": V1}).json()
    assert ok["ok"] is True and ok["policy"]["name"] == "v1"
    bad = c.post("/admin/v1/policies/lint", json={"document": "retension: 1\n"}).json()
    assert bad["ok"] is False
    assert bad["issues"][0] == {"field": "retension", "message": "unknown field", "line": 1, "column": 1}


def test_presets_and_schema_are_served(stack: Stack, officer: str) -> None:
    c = stack.client(officer)
    assert c.get("/admin/v1/policies/presets").json() == ["default", "gdpr-strict", "hipaa", "pci-dss"]
    assert "HIPAA" in c.get("/admin/v1/policies/presets/hipaa").text
    assert c.get("/admin/v1/policies/schema").json()["$id"] == "urn:appliance:policy:v1"


def test_tenant_admin_reads_own_policy_but_cannot_write_or_see_others(stack: Stack, officer: str) -> None:
    a, b = stack.tenant("a"), stack.tenant("b")
    stack.client(officer).post(f"/admin/v1/tenants/{b}/policy", json={"document": V1, "comment": "b"})
    admin = stack.client(stack.key(Role.TENANT_ADMIN, a))
    assert admin.get(f"/admin/v1/tenants/{a}/policy").status_code == 200
    assert admin.post(f"/admin/v1/tenants/{a}/policy", json={"document": V1}).status_code == 403
    for path in ("", "/versions", "/versions/1", "/diff?from=1&to=1"):
        assert admin.get(f"/admin/v1/tenants/{b}/policy{path}").status_code == 404, path
    app = stack.client(stack.key(Role.APP, a))
    assert app.get(f"/admin/v1/tenants/{a}/policy").status_code == 403


def test_operator_key_cannot_apply_policies_over_http(stack: Stack) -> None:
    """Separation of duties: compliance steers policy; operators run the machine."""
    tenant = stack.tenant()
    r = stack.client(stack.operator_key).post(f"/admin/v1/tenants/{tenant}/policy", json={"document": V1})
    assert r.status_code == 403


def test_policy_documents_are_not_stored_in_plaintext(stack: Stack, officer: str) -> None:
    from sqlalchemy import select

    from appliance.db.models import PolicyVersion

    tenant = stack.tenant()
    marker = "Zebediah Quinterro-Canary"
    doc = f"extends: default\npii:\n  allow_list: ['{marker}']\n"
    stack.client(officer).post(f"/admin/v1/tenants/{tenant}/policy", json={"document": doc, "comment": marker})
    with stack.services.sessions() as s:
        rows = s.scalars(select(PolicyVersion)).all()
    blob = b"".join(r.document_sealed + r.comment_sealed for r in rows)
    assert marker.encode() not in blob
