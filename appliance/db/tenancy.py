"""PostgreSQL row-level security: the second wall behind the service layer's tenant filters.

With :func:`enable_row_level_security` applied (``appliance db enable-rls``), every tenant
table has ``ENABLE`` and ``FORCE ROW LEVEL SECURITY`` and a default-deny policy: a
transaction sees (and may write) a tenant's rows only when it declared that tenant, or when
it declared itself global. :func:`install` makes every transaction of an engine declare it
as its first statement, with ``set_config(..., true)`` so the setting ends with the
transaction and a pooled connection carries nothing into the next one.

Which it is comes from a context variable: :func:`bind_tenant` (the API calls it once a
request's principal belongs to a tenant) makes the rest of that request, its worker threads
included, tenant-scoped; everything else (operators, compliance officers, the CLI, the worker,
key lookups during authentication, background batchers) is global. The application's role
must own no table and not have ``BYPASSRLS`` (a superuser or the owner without FORCE would
pass every policy).

The audit trail is walled for reads: a tenant-scoped transaction sees its own tenant's
entries and no checkpoint. Its chain links every entry to the one before it, whatever the
tenant, so the audit writer alone steps out of the tenant scope for an append
(:func:`as_global`) and back in after it. ``worker_leases`` holds no tenant and has no wall.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from sqlalchemy import Connection, Engine, event, text

from appliance.errors import ConfigError

__all__ = [
    "TENANT_TABLES",
    "as_global",
    "bind_tenant",
    "enable_row_level_security",
    "install",
    "tenant_scope",
    "walls_enabled",
]

_TENANT: ContextVar[str | None] = ContextVar("appliance_db_tenant", default=None)

_MINE = "current_setting('app.tenant_id', true)"
_GLOBAL = "current_setting('app.scope', true) = 'global'"
TENANT_TABLES: dict[str, str] = {
    "tenants": f"id = {_MINE}",
    "api_keys": f"tenant_id = {_MINE}",
    "data_keys": f"tenant_id = {_MINE} OR tenant_id IS NULL",  # system keys (hashes, audit MAC) wrap no tenant data
    "pseudonyms": f"tenant_id = {_MINE}",
    "blobs": f"tenant_id = {_MINE}",
    "policy_versions": f"tenant_id = {_MINE}",
    "tenant_policies": f"tenant_id = {_MINE}",
    "registered_models": f"owner_tenant_id = {_MINE} OR owner_tenant_id IS NULL",  # shared models
    "datasets": f"tenant_id = {_MINE}",
    "finetune_jobs": f"tenant_id = {_MINE}",
    "privacy_charges": f"tenant_id = {_MINE}",
    "model_versions": f"tenant_id = {_MINE}",
    "audit_entries": f"tenant_id = {_MINE}",  # appends step out of the scope: as_global
    "audit_checkpoints": "false",  # signed chain anchors: operators and compliance only
}
"""Table -> the rows a tenant-scoped transaction may see and write."""


def bind_tenant(tenant_id: str | None) -> Token[str | None]:
    """Scope the rest of the current context (a request) to ``tenant_id`` (None: global)."""
    return _TENANT.set(tenant_id)


@contextmanager
def tenant_scope(tenant_id: str | None) -> Iterator[None]:
    token = _TENANT.set(tenant_id)
    try:
        yield
    finally:
        _TENANT.reset(token)


def _declare(conn: Connection) -> None:
    tenant = _TENANT.get()
    conn.exec_driver_sql(
        "SELECT set_config('app.scope', %(scope)s, true), set_config('app.tenant_id', %(tenant)s, true)",
        {"scope": "tenant" if tenant else "global", "tenant": tenant or ""},
    )


@contextmanager
def as_global(conn: Connection) -> Iterator[None]:
    """Within the current transaction, act globally for the block, then return to the scope
    the transaction declared. Only for the audit chain's append, which must read the trail's
    head whatever its tenant; a no-op off PostgreSQL."""
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.exec_driver_sql("SELECT set_config('app.scope', 'global', true)")
    try:
        yield
    finally:
        if not conn.invalidated and conn.in_transaction():
            _declare(conn)


def install(engine: Engine) -> None:
    """PostgreSQL: every transaction on ``engine`` declares its scope first (harmless until
    :func:`enable_row_level_security` has run). SQLite has no row-level security: a no-op."""
    if engine.dialect.name == "postgresql":
        event.listen(engine, "begin", _declare)


def enable_row_level_security(conn: Connection, app_role: str | None = None) -> list[str]:
    """ENABLE and FORCE row-level security with one policy per tenant table; with
    ``app_role``, grant that role what the application needs (and nothing it could use to
    bypass the policies). Idempotent. Run as the tables' owner. -> the tables it covered."""
    if conn.dialect.name != "postgresql":
        raise ConfigError("row-level security needs PostgreSQL (database.url); on SQLite the services are the wall")
    for table, rows in TENANT_TABLES.items():
        conn.execute(text(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY'))
        conn.execute(text(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY'))
        conn.execute(text(f'DROP POLICY IF EXISTS tenant_wall ON "{table}"'))
        condition = f"({_GLOBAL}) OR ({rows})"
        conn.execute(text(f'CREATE POLICY tenant_wall ON "{table}" USING ({condition}) WITH CHECK ({condition})'))
    if app_role is not None:
        role = _quoted_role(conn, app_role)
        conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"))
        conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"))
        # Tables and sequences a later migration creates (as this owner) get the same rights.
        conn.execute(
            text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}")
        )
        conn.execute(text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}"))
    return list(TENANT_TABLES)


def walls_enabled(conn: Connection) -> bool:
    """Whether :func:`enable_row_level_security` has run on this database (any table forced)."""
    if conn.dialect.name != "postgresql":
        return False
    forced = conn.execute(
        text(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relforcerowsecurity "
            "AND c.relname = ANY(:tables)"
        ),
        {"tables": list(TENANT_TABLES)},
    ).scalar()
    return bool(forced)


def _quoted_role(conn: Connection, name: str) -> str:
    quoted: Any = conn.execute(text("SELECT quote_ident(:n)"), {"n": name}).scalar()
    return str(quoted)
