"""PostgreSQL row-level security, the second wall (``appliance/db/tenancy.py``).

A fresh database is migrated by its owner; ``enable_row_level_security`` switches the walls on
and grants an application role made here, which owns nothing and cannot bypass RLS (the suite's
usual ``postgres`` superuser would pass every policy). Then the real services and a live server
run as that role: the API works through the wall, a query without a tenant sees nothing, a
tenant-scoped query sees only its tenant even without the service's filter, and a pooled
connection carries no tenant into its next transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError

from appliance.db.engine import make_engine, transaction
from appliance.db.models import ApiKey, AuditCheckpoint, AuditEntry, Dataset, Tenant
from appliance.db.tenancy import TENANT_TABLES, enable_row_level_security, tenant_scope
from appliance.errors import ConfigError
from appliance.roles import Role
from appliance.services.audit import audit_log_of
from appliance.services.principal import Principal
from appliance.services.schema import DatabaseSchema
from appliance.training import Example, TrainingResult, TrainingSpec, train
from appliance.training.worker import Worker
from tests.finetune_support import OP, add_tickets, finetune_tenant, queue_job, tickets_jsonl
from tests.support import Stack, live_stack, make_services, make_settings, walled_postgres

pytestmark = pytest.mark.postgres

NOT_WALLED: dict[str, str] = {}
"""Tables with tenant rows and no wall, and why (none today: the audit trail is walled too)."""


@dataclass
class Walled:
    stack: Stack
    role: str
    app_url: str
    owner_url: str
    a: str
    a_id: str
    a_dataset: str
    b: str
    b_id: str

    def raw(self, url: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


@pytest.fixture(scope="module")
def walled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walled]:
    tmp = tmp_path_factory.mktemp("rls")
    with (
        walled_postgres() as (app_url, owner_url, role),
        live_stack(make_services(make_settings(tmp / "data", app_url))) as stack,
    ):
        svc = stack.services
        a = finetune_tenant(svc, prefix="wall-a")
        b = finetune_tenant(svc, prefix="wall-b")
        dataset = add_tickets(svc, a).id
        add_tickets(svc, b)
        yield Walled(
            stack, role, app_url, owner_url, a, svc.tenants.get(OP, a).id, dataset, b, svc.tenants.get(OP, b).id
        )


def test_every_tenant_table_is_walled_and_forced_and_the_app_role_owns_nothing_and_cannot_bypass(
    walled: Walled,
) -> None:
    with walled.raw(walled.owner_url) as conn:
        with_tenant = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND column_name IN ('tenant_id', 'owner_tenant_id')"
            )
        } | {"tenants"}
        flags = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
            )
        }
        role = conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (walled.role,)).fetchone()
        owned = conn.execute("SELECT count(*) FROM pg_tables WHERE tableowner = %s", (walled.role,)).fetchone()
    assert with_tenant - set(TENANT_TABLES) == set(NOT_WALLED), "a table with tenant rows has no wall"
    for table in TENANT_TABLES:
        assert flags[table] == (True, True), table
    assert role == (False, False)
    assert owned == (0,)


TENANT_ROWS = {
    "data_keys": "tenant_id IS NOT NULL",
    "registered_models": "owner_tenant_id IS NOT NULL",
    "audit_entries": "tenant_id IS NOT NULL",
}
"""Where a walled table also holds rows of no tenant (system keys, shared models), which stay visible."""


def test_a_query_without_a_tenant_sees_no_rows_of_any_tenant(walled: Walled) -> None:
    with walled.raw(walled.app_url) as conn, walled.raw(walled.owner_url) as owner:
        for table in TENANT_TABLES:
            where = TENANT_ROWS.get(table, "true")
            assert conn.execute(f'SELECT count(*) FROM "{table}" WHERE {where}').fetchone() == (0,), table
            if table in ("tenants", "datasets", "data_keys", "policy_versions"):  # the owner sees them
                assert owner.execute(f'SELECT count(*) FROM "{table}" WHERE {where}').fetchone() != (0,), table


def test_a_tenant_scoped_query_without_the_service_filter_sees_only_its_tenant_and_cannot_write_another(
    walled: Walled,
) -> None:
    sessions = walled.stack.services.sessions
    with tenant_scope(walled.b_id), sessions() as s:
        assert {t.id for t in s.scalars(select(Tenant))} == {walled.b_id}
        assert s.get(Dataset, walled.a_dataset) is None  # A's dataset, asked for by id
        assert {d.tenant_id for d in s.scalars(select(Dataset))} == {walled.b_id}
        assert all(k.tenant_id == walled.b_id for k in s.scalars(select(ApiKey)))
    with tenant_scope(walled.b_id), sessions() as s:  # A's rows are not there to change
        changed = s.execute(
            text("UPDATE datasets SET name = 'stolen' WHERE tenant_id = :a RETURNING id"), {"a": walled.a_id}
        ).all()
        assert changed == []
    planted = text(
        "INSERT INTO api_keys (id, tenant_id, role, name, secret_hash, hash_key_version, created_at) "
        "VALUES ('0123456789abcdef', :a, 'app', 'planted', '\\x00', 1, now())"
    )
    with tenant_scope(walled.b_id), sessions() as s, pytest.raises(DBAPIError, match="row-level security"):
        s.execute(planted, {"a": walled.a_id})
    with sessions() as s:  # global: A's dataset kept its name
        row = s.get(Dataset, walled.a_dataset)
        assert row is not None and row.name == "tickets"


def test_a_pooled_connection_carries_no_tenant_into_its_next_transaction(walled: Walled) -> None:
    engine = create_engine(walled.app_url, pool_size=1, max_overflow=0)
    from appliance.db import tenancy

    tenancy.install(engine)
    probe = text("SELECT current_setting('app.tenant_id', true), current_setting('app.scope', true)")
    try:
        with tenant_scope(walled.a_id), engine.begin() as conn:
            assert tuple(conn.execute(probe).one()) == (walled.a_id, "tenant")
            first = conn.connection.dbapi_connection
        with engine.connect() as conn:  # the same pooled connection, no scope declared by us
            assert conn.connection.dbapi_connection is first
            raw = conn.connection.dbapi_connection
            assert raw is not None
            with raw.cursor() as cur:  # below SQLAlchemy: a bare transaction on that connection
                cur.execute("SELECT current_setting('app.tenant_id', true), current_setting('app.scope', true)")
                assert cur.fetchone() in (("", ""), (None, None))
                cur.execute("SELECT count(*) FROM datasets")
                assert cur.fetchone() == (0,)
    finally:
        engine.dispose()


def test_the_api_works_through_the_wall_and_another_tenants_object_is_still_404(walled: Walled) -> None:
    stack = walled.stack
    a_admin = stack.client(stack.key(Role.TENANT_ADMIN, walled.a))
    a_app = stack.client(stack.key(Role.APP, walled.a))
    b_admin = stack.client(stack.key(Role.TENANT_ADMIN, walled.b))
    base = f"/admin/v1/tenants/{walled.a}"
    assert a_admin.post(f"{base}/keys", json={"role": "app", "name": "through"}).status_code == 201
    up = a_admin.post(f"{base}/datasets", params={"name": "more", "format": "jsonl"}, content=tickets_jsonl())
    assert up.status_code == 201, up.text
    assert {d["name"] for d in a_admin.get(f"{base}/datasets").json()["items"]} == {"tickets", "more"}
    assert a_admin.get(f"{base}/policy").status_code == 200
    anonymized = a_app.post("/v1/privacy/anonymize", json={"text": "Call Anna Berg at anna.berg@example.com"})
    assert anonymized.status_code == 200, anonymized.text
    theirs = b_admin.get(f"{base}/datasets/{walled.a_dataset}")
    missing = b_admin.get("/admin/v1/tenants/no-such-tenant/datasets/00000000-0000-0000-0000-000000000000")
    assert theirs.status_code == missing.status_code == 404
    names = {t["name"] for t in stack.client(stack.operator_key).get("/admin/v1/tenants").json()}
    assert {walled.a, walled.b} <= names
    verified = stack.client(stack.operator_key).get("/admin/v1/audit/verify").json()
    assert verified["ok"], verified


def test_a_tenant_sees_only_its_own_audit_entries_and_no_checkpoint_and_its_appends_still_chain(
    walled: Walled,
) -> None:
    svc = walled.stack.services
    audit = audit_log_of(svc)
    audit.checkpoint()  # the trail's signed anchor, for operators and compliance only
    with tenant_scope(walled.b_id), transaction(svc.sessions) as s:
        # The append reads the head of the whole trail (another tenant's entry, most likely)...
        appended = audit.record("test.walled.append", actor="t", tenant_id=walled.b_id, session=s)
        # ...and the transaction is back in B's scope afterwards.
        assert {e.tenant_id for e in s.scalars(select(AuditEntry))} == {walled.b_id}
        assert s.get(AuditEntry, appended) is not None
        assert s.scalars(select(AuditCheckpoint)).all() == []
    with svc.sessions() as s:  # global: every tenant's entries, the operator's, the checkpoint
        tenants = {e.tenant_id for e in s.scalars(select(AuditEntry))}
        assert {None, walled.a_id, walled.b_id} <= tenants
        assert s.scalars(select(AuditCheckpoint)).all() != []
    assert audit.verify(Principal.local_operator()).ok


def test_the_worker_runs_a_job_in_its_tenants_scope_behind_the_wall(walled: Walled) -> None:
    svc = walled.stack.services
    job = queue_job(svc, walled.a, "tickets")
    seen: list[tuple[object, set[str]]] = []

    def watched(spec: TrainingSpec, examples: Sequence[Example], output_dir: Path, **kw: Any) -> TrainingResult:
        with svc.sessions() as s:  # what any query made during the job is allowed to see
            scope = s.execute(text("SELECT current_setting('app.tenant_id', true)")).scalar()
            seen.append((scope, {d.tenant_id for d in s.scalars(select(Dataset))}))
        return train(spec, examples, output_dir, **kw)

    t = svc.settings.training
    worker = Worker(svc.job_store(), watched, lease_s=t.lease_s, poll_s=0.1, scratch=t.scratch_dir)
    assert worker.run(once=True) == 1
    assert seen == [(walled.a_id, {walled.a_id})]
    done = svc.finetune.get(OP, walled.a, job.id)
    assert (done.state, done.model_version) == ("succeeded", 1), done
    assert audit_log_of(svc).verify(Principal.local_operator()).ok


def test_an_upgrade_walls_the_tables_again_and_tables_made_later_are_granted_to_the_app_role(
    walled: Walled,
) -> None:
    with walled.raw(walled.owner_url) as owner:
        owner.execute("ALTER TABLE datasets NO FORCE ROW LEVEL SECURITY")  # as a new table would be
        owner.execute("CREATE TABLE made_later (id integer)")
    try:
        engine = make_engine(walled.owner_url)
        try:
            DatabaseSchema(engine).upgrade()  # what `appliance db upgrade` runs
        finally:
            engine.dispose()
        with walled.raw(walled.owner_url) as owner:
            forced = owner.execute("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'datasets'").fetchone()
        assert forced == (True,)
        with walled.raw(walled.app_url) as app:
            assert app.execute("SELECT count(*) FROM made_later").fetchone() == (0,)
    finally:
        with walled.raw(walled.owner_url) as owner:
            owner.execute("DROP TABLE IF EXISTS made_later")


def test_the_wall_is_unused_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn, pytest.raises(ConfigError, match="PostgreSQL"):
        enable_row_level_security(conn)
    engine.dispose()
