"""``appliance audit ...`` on a real SQLite install made by ``appliance init``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from appliance.cli.audit import audit
from appliance.cli.context import CliState
from appliance.services.audit import AuditLog
from appliance.services.principal import Principal


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliState]:
    for name in [k for k in os.environ if k.startswith("APPLIANCE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    config = tmp_path / "appliance.toml"
    config.write_text("")
    env = {**os.environ, "APPLIANCE_CONFIG": str(config)}
    subprocess.run([sys.executable, "-m", "appliance.cli", "init", "--json"], env=env, check=True, capture_output=True)
    s = CliState(config)
    try:
        yield s
    finally:
        s.close()


def _run(state: CliState, *args: str) -> Result:
    return CliRunner().invoke(audit, list(args), obj=state, catch_exceptions=False)


def _fill(state: CliState, n: int = 5) -> tuple[AuditLog, list[int]]:
    """n entries on top of whatever ``init`` itself audited."""
    log = AuditLog(state.services.sessions, state.services.data_keys)
    ids = [
        log.record("chat.completion", actor=Principal.local_operator(), facts={"entities": {"PERSON": i}})
        for i in range(n)
    ]
    return log, ids


def test_verify_exits_0_when_intact_and_1_naming_the_entry_when_tampered(state: CliState) -> None:
    _, ids = _fill(state)
    ok = _run(state, "verify", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["ok"] is True
    with state.services.engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET outcome = 'error' WHERE id = :i"), {"i": ids[2]})
    bad = _run(state, "verify", "--json")
    assert bad.exit_code == 1
    body = json.loads(bad.output)
    assert (body["ok"], body["problem"], body["entry_id"]) == (False, "edited", ids[2])


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_key_and_verify_export_round_trip(state: CliState, tmp_path: Path, fmt: str) -> None:
    _fill(state)
    export, keys = tmp_path / f"audit.{fmt}", tmp_path / "keys.json"
    assert _run(state, "export", "--format", fmt, "--output", str(export)).exit_code == 0
    shown = _run(state, "export-key", "--output", str(keys))
    assert shown.exit_code == 0
    key_material = json.loads(keys.read_text())["keys"]["1"]
    assert key_material not in shown.output
    checked = _run(state, "verify-export", str(export), "--key-file", str(keys), "--json")
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.output)["entries_checked"] >= 5
    export.write_text(export.read_text().replace("PERSON", "PERSOM", 1))
    assert _run(state, "verify-export", str(export), "--key-file", str(keys)).exit_code == 1


def test_checkpoint_and_purge_are_audited(state: CliState) -> None:
    log, ids = _fill(state, 3)
    with state.services.engine.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM audit_entries")).scalar_one()
    cp = json.loads(_run(state, "checkpoint", "--json").output)
    assert (cp["kind"], cp["last_entry_id"], cp["entry_count"]) == ("checkpoint", ids[-1], total)
    purged = json.loads(_run(state, "purge", "--retention-days", "0", "--json").output)
    assert purged["entries_purged"] == total
    assert purged["entries_removed"] == total
    assert log.query(Principal.local_operator()).items[0].action == "audit.purge"
    assert log.verify().ok
    assert _run(state, "verify").exit_code == 0
