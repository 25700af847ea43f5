"""The `appliance` command as an operator and the installer drive it (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_DATA_DIR"] = str(tmp_path / "data")
    env["APPLIANCE_CONFIG"] = str(tmp_path / "appliance.toml")
    (tmp_path / "appliance.toml").write_text("")

    def _run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appliance.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            input=input,
            check=False,
        )

    return _run


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_init_creates_a_0600_key_migrates_and_issues_one_operator_key(run: Run, tmp_path: Path) -> None:
    first = _json(run("init", "--json"))
    key_file = tmp_path / "data" / "master.key"
    assert first["master_key_created"] is True
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert str(first["operator_api_key"]).startswith("apl_")
    again = _json(run("init", "--json"))
    assert again["master_key_created"] is False
    assert again["operator_api_key"] is None  # never a second first-key
    assert _json(run("db", "current", "--json"))["up_to_date"] is True


def test_tenant_and_key_lifecycle_with_json_output(run: Run) -> None:
    _json(run("init", "--json"))
    tenant = _json(run("tenant", "create", "acme", "--display-name", "Acme", "--json"))
    assert tenant["slug"] == "acme"
    created = _json(run("apikey", "create", "--tenant", "acme", "--role", "app", "--json"))
    assert str(created["api_key"]).startswith("apl_")
    key_id = created["key"]["id"]  # type: ignore[index]
    listed = json.loads(run("apikey", "list", "--tenant", "acme", "--json").stdout)
    assert [k["id"] for k in listed] == [key_id]
    assert created["api_key"] not in json.dumps(listed)
    revoked = _json(run("apikey", "revoke", key_id, "--json"))
    assert revoked["revoked_at"] is not None
    assert json.loads(run("apikey", "list", "--tenant", "acme", "--json").stdout) == []
    every_key = json.loads(run("apikey", "list", "--tenant", "acme", "--include-revoked", "--json").stdout)
    assert [(k["id"], k["revoked_at"] is not None) for k in every_key] == [(key_id, True)]
    assert json.loads(run("tenant", "list", "--json").stdout)[0]["slug"] == "acme"
    assert _json(run("tenant", "delete", "acme", "--yes", "--json"))["slug"] == "acme"
    assert json.loads(run("tenant", "list", "--json").stdout) == []


@pytest.mark.parametrize(
    "args",
    [
        ("tenant", "create", "Bad Name!"),
        ("tenant", "delete", "ghost", "--yes"),
        ("apikey", "create", "--tenant", "ghost", "--role", "app"),
        ("apikey", "create", "--role", "app"),
        ("apikey", "create", "--role", "wizard"),
        ("apikey", "revoke", "nope"),
        ("no-such-command",),
    ],
)
def test_errors_exit_2_with_one_clear_line(run: Run, args: tuple[str, ...]) -> None:
    _json(run("init", "--json"))
    proc = run(*args)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() != ""


def test_bad_config_stops_with_one_line_naming_the_key(run: Run, tmp_path: Path) -> None:
    (tmp_path / "appliance.toml").write_text("[server]\nport = 'http'\n")
    proc = run("db", "current")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "server.port" in proc.stderr


def test_world_readable_master_key_is_refused(run: Run, tmp_path: Path) -> None:
    _json(run("init", "--json"))
    (tmp_path / "data" / "master.key").chmod(0o644)
    proc = run("tenant", "list")
    assert proc.returncode == 2
    assert "0644" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_maintenance_purges_and_signs_a_checkpoint(run: Run) -> None:
    _json(run("init", "--json"))
    _json(run("tenant", "create", "acme", "--json"))
    out = _json(run("maintenance", "--json"))
    assert out["pseudonyms_purged"] == 0
    assert out["checkpoint"]["entry_count"] >= 1  # type: ignore[index]
    verify = run("audit", "verify", "--json")
    assert verify.returncode == 0, verify.stdout


def _tiny_model(into: Path) -> Path:
    (into / "tiny").mkdir()
    (into / "tiny" / "config.json").write_text('{"model_type": "bert"}')
    (into / "tiny" / "model.safetensors").write_bytes(os.urandom(4096))
    return into / "tiny"


def test_maintenance_signs_its_checkpoint_and_sweeps_past_a_tenant_whose_key_is_gone(run: Run, tmp_path: Path) -> None:
    import sqlite3

    _json(run("init", "--json"))
    acme = _json(run("tenant", "create", "acme", "--json"))["id"]
    _json(run("model", "add", "acme-emb", "--kind", "embedding", "--source", str(_tiny_model(tmp_path)),
              "--tenant", "acme", "--json"))  # fmt: skip
    with sqlite3.connect(tmp_path / "data" / "appliance.db") as db:  # the key is lost, the rows remain
        db.execute("DELETE FROM data_keys WHERE scope = ?", (acme,))
    out = _json(run("maintenance", "--json"))
    assert out["sealed_model_blobs_swept"] == 0
    assert out["sealed_model_sweep_error"] is None
    assert out["checkpoint"]["entry_count"] >= 1  # type: ignore[index]


def test_when_the_sweep_fails_maintenance_still_signs_its_checkpoint_and_exits_non_zero(
    run: Run, tmp_path: Path
) -> None:
    _json(run("init", "--json"))
    acme = _json(run("tenant", "create", "acme", "--json"))["id"]
    blob_dir = tmp_path / "data" / "blobs"
    blob_dir.mkdir(parents=True, exist_ok=True)
    (blob_dir / str(acme)).write_text("a damaged data directory: a file where the tenant's blobs belong")
    proc = run("maintenance", "--json")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert out["sealed_model_blobs_swept"] is None
    assert "NotADirectoryError" in out["sealed_model_sweep_error"]
    assert out["checkpoint"]["entry_count"] >= 1
    verify = _json(run("audit", "verify", "--json"))
    assert verify["ok"] is True
    assert verify["checkpoints_checked"] >= 1  # type: ignore[operator]


@pytest.mark.slow
def test_a_tenant_model_added_by_the_cli_is_sealed_served_from_memory_and_removed_with_its_files(
    run: Run, tmp_path: Path
) -> None:
    import shutil

    from tests.unit.models import support

    _json(run("init", "--json"))
    tenant_id = _json(run("tenant", "create", "acme", "--json"))["id"]
    source = support.minilm_copy(tmp_path)
    samples = support.plaintext_samples(source)
    added = _json(run("model", "add", "acme-embed", "--kind", "embedding", "--source", str(source),
                      "--tenant", "acme", "--device", "cpu", "--json"))  # fmt: skip
    assert str(added["source"]).startswith("sealed:")
    shutil.rmtree(source)  # the sealed copy is all the appliance needs
    assert support.files_containing(tmp_path / "data", samples) == []
    warm = _json(run("model", "warmup", "acme-embed", "--tenant", "acme", "--json"))
    assert warm["model"]["source"] == added["source"]  # type: ignore[index]
    assert support.files_containing(tmp_path / "data", samples) == []

    bad = run("model", "add", "other", "--kind", "embedding", "--source", str(tmp_path / "nowhere"), "--tenant", "acme")
    assert bad.returncode == 2
    assert "is not a Hugging Face-format model directory" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert _json(run("maintenance", "--json"))["sealed_model_blobs_swept"] == 0

    _json(run("model", "remove", "acme-embed", "--tenant", "acme", "--json"))
    assert list((tmp_path / "data" / "blobs" / str(tenant_id)).iterdir()) == []
