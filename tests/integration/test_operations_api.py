"""The operations API (key ages and rotation, data keys, models) and the audit export download,
through real HTTP on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from appliance.db.base import utcnow
from appliance.db.models import ApiKey
from appliance.roles import Role
from appliance.services.audit_export import verify_export
from appliance.services.principal import Principal
from tests.support import Stack, live_stack, make_services, make_settings


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("operations")
    with live_stack(make_services(make_settings(tmp / "data", f"sqlite:///{tmp / 'a.db'}"))) as stack:
        yield stack


def test_api_key_ages_flag_keys_older_than_the_rotation_period(ops: Stack) -> None:
    tenant = ops.tenant("ages")
    old, fresh = ops.key(Role.APP, tenant), ops.key(Role.APP, tenant)
    old_id, fresh_id = old.split("_")[1], fresh.split("_")[1]
    with ops.services.engine.begin() as conn:  # a key made 100 days ago
        conn.execute(update(ApiKey).where(ApiKey.id == old_id).values(created_at=utcnow() - timedelta(days=100)))
    rows = {k["id"]: k for k in ops.client(ops.operator_key).get("/admin/v1/operations/api-keys").json()}
    assert rows[old_id]["rotation_due"] is True and rows[old_id]["age_days"] >= 100
    assert rows[old_id]["tenant"] == tenant
    assert rows[fresh_id]["rotation_due"] is False
    assert "secret" not in str(rows) and old.split("_")[2] not in str(rows)
    ops.services.api_keys.revoke(Principal.local_operator(), old_id)
    rows = {k["id"] for k in ops.client(ops.operator_key).get("/admin/v1/operations/api-keys").json()}
    assert old_id not in rows and fresh_id in rows  # revoked keys need no rotation


def test_data_keys_report_versions_ages_and_the_master_key(ops: Stack) -> None:
    tenant = ops.tenant("dk")
    report = ops.client(ops.operator_key).get("/admin/v1/operations/data-keys").json()
    assert report["rotation_days"] == 90
    assert report["rows_on_old_kek"] == 0
    mine = [k for k in report["keys"] if k["tenant"] == tenant]
    assert [(k["purpose"], k["version"], k["state"], k["on_current_kek"]) for k in mine] == [
        ("data", 1, "active", True)
    ]
    assert not any("key" in k and isinstance(k.get("key"), str) for k in report["keys"])


def test_models_list_builtins_and_shared_models(ops: Stack) -> None:
    models = ops.client(ops.operator_key).get("/admin/v1/operations/models").json()
    names = {m["name"]: m for m in models}
    assert names["smollm2-135m-instruct"]["builtin"] is True
    assert names["all-minilm-l6-v2"]["kind"] == "embedding"


@pytest.mark.parametrize("path", ["/admin/v1/operations/api-keys", "/admin/v1/operations/data-keys"])
@pytest.mark.parametrize("role", [Role.COMPLIANCE, Role.TENANT_ADMIN])
def test_operations_are_for_operators_only(ops: Stack, path: str, role: Role) -> None:
    key = ops.key(role, ops.tenant("nope") if not role.is_global else None)
    assert ops.client(key).get(path).status_code == 403


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_audit_export_download_verifies_offline(ops: Stack, fmt: str, tmp_path: Path) -> None:
    ops.tenant("export")
    officer = ops.client(ops.key(Role.COMPLIANCE))
    r = officer.post("/admin/v1/audit/export", json={"format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"].endswith(f'.{fmt}"')
    path = tmp_path / f"audit.{fmt}"
    path.write_bytes(r.content)
    result = verify_export(path, ops.services.audit.mac_keys(Principal.local_operator()))
    assert result.ok, result.detail
    assert result.entries_checked > 0


def test_audit_export_refuses_bad_input_and_tenant_admins(ops: Stack) -> None:
    officer = ops.client(ops.key(Role.COMPLIANCE))
    assert officer.post("/admin/v1/audit/export", json={"format": "xml"}).status_code == 422
    assert officer.post("/admin/v1/audit/export", json={"since": "yesterday"}).status_code in (400, 422)
    admin = ops.client(ops.key(Role.TENANT_ADMIN, ops.tenant("ta")))
    assert admin.post("/admin/v1/audit/export", json={}).status_code == 403
