"""The shipped migrations build the same schema on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from appliance.db import migrate
from appliance.db.base import Base
from appliance.db.engine import make_engine
from tests.support import postgres_database


def _schema(engine: Engine) -> dict[str, Any]:
    insp = inspect(engine)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version":
            continue
        out[table] = {
            "columns": {c["name"]: (c["nullable"], type(c["type"]).__visit_name__) for c in insp.get_columns(table)},
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted(
                (f["name"], tuple(f["constrained_columns"]), f["referred_table"]) for f in insp.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(table)
            ),
            "uniques": sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)),
        }
    return out


# SQLite has one INTEGER type; 64-bit ids are BIGINT on PostgreSQL only.
_TYPE_FAMILY = {
    "VARCHAR": "string",
    "TEXT": "text",
    "INTEGER": "int",
    "BIGINT": "int",
    "BLOB": "bytes",
    "BYTEA": "bytes",
    "DATETIME": "datetime",
    "TIMESTAMP": "datetime",
    "BOOLEAN": "bool",
    "FLOAT": "float",
    "DOUBLE_PRECISION": "float",
    "JSON": "json",
    "JSONB": "json",
    "NUMERIC": "num",
}


def _normalise(schema: dict[str, Any]) -> dict[str, Any]:
    for table in schema.values():
        # PostgreSQL also reports each unique constraint as a unique index; SQLite does not.
        unique_names = {name for name, _ in table["uniques"]}
        table["indexes"] = [i for i in table["indexes"] if i[0] not in unique_names]
        table["columns"] = {
            n: (nullable, _TYPE_FAMILY.get(t.upper(), t)) for n, (nullable, t) in table["columns"].items()
        }
    return schema


@pytest.mark.postgres
def test_migrations_produce_the_same_schema_on_sqlite_and_postgres(tmp_path: Path) -> None:
    sqlite = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    migrate.upgrade(sqlite)
    with postgres_database() as url:
        pg = make_engine(url)
        try:
            migrate.upgrade(pg)
            assert _normalise(_schema(sqlite)) == _normalise(_schema(pg))
        finally:
            pg.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migrations_match_the_models_so_nothing_is_left_unmigrated(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        engines = [make_engine(f"sqlite:///{tmp_path / 'b.db'}")]
        _check(engines[0])
    else:
        with postgres_database() as url:
            engine = make_engine(url)
            try:
                _check(engine)
            finally:
                engine.dispose()


def _check(engine: Engine) -> None:
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
