"""Migration 0004 on SQLite and PostgreSQL: existing privacy charges take their dataset's
content hash (the per-dataset budget is kept by content from then on); a charge whose
dataset was already deleted keeps none and counts by its dataset id, as before."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text

from appliance.db import migrate
from appliance.db.engine import make_engine
from tests.conftest import BACKENDS
from tests.support import postgres_database

NOW = datetime(2026, 11, 30, tzinfo=UTC)
HASH = "ab" * 32


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        yield make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
        return
    with postgres_database() as url:
        pg = make_engine(url)
        try:
            yield pg
        finally:
            pg.dispose()


def _charge(conn: Connection, job: str, dataset: str) -> None:
    conn.execute(
        text(
            "INSERT INTO privacy_charges (tenant_id, dataset_id, job_id, history, steps, delta, epsilon, settled, "
            "charged_at, updated_at) VALUES ('t1', :d, :j, '[[1.0, 0.1, 30]]', 30, 1e-5, 1.0, true, :now, :now)"
        ),
        {"d": dataset, "j": job, "now": NOW},
    )


def test_existing_charges_take_their_datasets_content_hash_and_a_deleted_ones_keep_none(engine: Engine) -> None:
    migrate.upgrade(engine, "0003")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tenants (id, slug, display_name, created_at) VALUES ('t1', 't1', 'T1', :now)"),
            {"now": NOW},
        )
        conn.execute(
            text(
                "INSERT INTO datasets (id, tenant_id, name, task, format, blob_id, rows, source_bytes, content_hash, "
                "stats_sealed, created_by, created_at) VALUES ('d-kept', 't1', 'kept', 'classification', 'jsonl', "
                "'b1', 12, 100, :h, :s, 'op', :now)"
            ),
            {"h": HASH, "s": b"sealed", "now": NOW},
        )
        _charge(conn, "j-kept", "d-kept")
        _charge(conn, "j-gone", "d-gone")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        hashes = dict(conn.execute(text("SELECT job_id, dataset_hash FROM privacy_charges")).all())
    assert hashes == {"j-kept": HASH, "j-gone": None}
