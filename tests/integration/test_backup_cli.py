"""``appliance backup`` as an operator drives it: real ``python -m appliance.cli`` processes over
a real SQLite file and key file; every refusal one line; a SQLite backup restored into
PostgreSQL (the documented way to move to PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import postgres_database

Run = Callable[..., subprocess.CompletedProcess[str]]


def _runner(env: dict[str, str]) -> Run:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appliance.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    return run


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_DATA_DIR"] = str(tmp_path / "data")
    env["APPLIANCE_CONFIG"] = str(tmp_path / "appliance.toml")
    (tmp_path / "appliance.toml").write_text("")
    return env


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_create_verify_restore_and_every_refusal_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    run = _runner(env)
    _json(run("init", "--json"))
    _json(run("tenant", "create", "acme", "--json"))
    archive = tmp_path / "acme.apbak"
    made = _json(run("backup", "create", "--output", str(archive), "--json"))
    assert made["rows"]["tenants"] == 1 and made["path"] == str(archive)
    assert (tmp_path / "acme.apbak.sha256").read_text().startswith(made["sha256"])

    verified = _json(run("backup", "verify", str(archive), "--json"))
    assert verified["sha256"] == made["sha256"] and verified["data_keys_unwrapped"] >= 2

    again = run("backup", "create", "--output", str(archive))
    assert again.returncode == 2 and again.stderr.strip() == f"error: {archive} already exists; choose another name"

    refused = run("backup", "restore", str(archive))
    assert refused.returncode == 2 and "--force" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

    restored = _json(run("backup", "restore", str(archive), "--force", "--json"))
    assert restored["replaced_existing"] is True and restored["check"]["audit_ok"] is True

    damaged = tmp_path / "damaged.apbak"
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    damaged.write_bytes(bytes(raw))
    bad = run("backup", "verify", str(damaged))
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith(f"backup {damaged} FAILED verification")

    missing = run("backup", "verify", str(tmp_path / "nope.apbak"))
    assert missing.returncode == 2 and "no backup at" in missing.stderr


@pytest.mark.postgres
def test_a_sqlite_backup_restores_into_postgresql(env: dict[str, str], tmp_path: Path) -> None:
    run = _runner(env)
    _json(run("init", "--json"))
    _json(run("tenant", "create", "moving", "--json"))
    archive = tmp_path / "move.apbak"
    _json(run("backup", "create", "--output", str(archive), "--json"))
    with postgres_database() as url:
        on_pg = _runner({**env, "APPLIANCE_DATABASE__URL": url})
        assert on_pg("db", "upgrade").returncode == 0  # a freshly installed PostgreSQL node: schema, no data
        restored = _json(on_pg("backup", "restore", str(archive), "--json"))
        assert restored["check"]["audit_ok"] and restored["backup"]["database"] == "sqlite"
        tenants = _json(on_pg("tenant", "list", "--json"))
        assert [t["slug"] for t in tenants] == ["moving"]
        assert _json(on_pg("audit", "verify", "--json"))["ok"] is True
