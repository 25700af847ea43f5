"""``appliance crypto-keys ...`` as an operator drives it: real ``python -m appliance.cli``
subprocesses over a real SQLite file and key files, rotation end to end, and every failure a
one-line exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_settings
from appliance.crypto.blobs import BlobStore
from appliance.crypto.keyring import encode_key, new_key, read_key_file, write_key_file
from appliance.services.container import Services, build_services
from appliance.services.principal import Principal
from tests.unit.crypto.factories import create_sealed_rows, open_ref

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_DATA_DIR"] = str(tmp_path / "data")
    env["APPLIANCE_CONFIG"] = str(tmp_path / "appliance.toml")
    (tmp_path / "appliance.toml").write_text("")
    return env


@pytest.fixture
def run(env: dict[str, str]) -> Run:
    def _run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appliance.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    return _run


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _services(tmp_path: Path) -> Services:
    return build_services(load_settings(tmp_path / "appliance.toml", data_dir=tmp_path / "data"))


def test_status_rotate_tenant_and_rotate_master_end_to_end(run: Run, tmp_path: Path) -> None:
    _json(run("init", "--json"))
    _json(run("tenant", "create", "acme", "--json"))
    svc = _services(tmp_path)
    try:
        tenant_id = svc.tenants.get(Principal.local_operator(), "acme").id
        refs = create_sealed_rows(svc, tenant_id, b"cli canary")
        blob = BlobStore(svc.settings.blob_dir, svc.data_keys, svc.sessions).put(tenant_id, "dataset", b"blob body")
    finally:
        svc.close()

    status = _json(run("crypto-keys", "status", "--json"))
    data_keys = [k for k in status["keys"] if k["tenant"] == "acme"]
    assert [(k["version"], k["state"], k["records"], k["blobs"]) for k in data_keys] == [(1, "active", len(refs), 1)]
    old_key = read_key_file(tmp_path / "data" / "master.key")
    assert encode_key(old_key) not in json.dumps(status)

    rotated = _json(run("crypto-keys", "rotate-tenant", "acme", "--grace-seconds", "0", "--json"))
    assert (rotated["version"], rotated["records"], rotated["blobs"], rotated["destroyed_versions"]) == (
        2,
        len(refs),
        1,
        [1],
    )
    human = run("crypto-keys", "rotate-tenant", "acme", "--grace-seconds", "0")
    assert human.returncode == 0, human.stderr
    assert "version 3" in human.stdout

    new_file = tmp_path / "new-master.key"
    new = new_key()
    write_key_file(new_file, new)
    master = _json(run("crypto-keys", "rotate-master", "--new-key-file", str(new_file), "--json"))
    assert master["rewrapped"] == master["total"] >= 2
    again = run("crypto-keys", "rotate-master", "--new-key-file", str(new_file))
    assert again.returncode == 0, again.stderr  # a re-run before the config switch is a no-op
    assert "0 re-wrapped" in again.stdout
    (tmp_path / "appliance.toml").write_text(
        f"[keys]\nmaster_key_file = {str(new_file)!r}\nprevious_master_key_files = [{str(tmp_path / 'data' / 'master.key')!r}]\n"
    )
    done = run("crypto-keys", "rotate-master", "--new-key-file", str(new_file))
    assert done.returncode == 0, done.stderr
    assert "0 re-wrapped" in done.stdout
    assert "keys.master_key_file" in done.stdout
    assert _json(run("crypto-keys", "status", "--json"))["rows_on_old_kek"] == 0

    (tmp_path / "appliance.toml").write_text(f"[keys]\nmaster_key_file = {str(new_file)!r}\n")  # old key retired
    svc = _services(tmp_path)
    try:
        assert [open_ref(svc, r) for r in refs] == [b"cli canary"] * len(refs)
        assert (
            BlobStore(svc.settings.blob_dir, svc.data_keys, svc.sessions).read_bytes(tenant_id, blob.id) == b"blob body"
        )
    finally:
        svc.close()


def test_errors_exit_2_with_one_line(run: Run, tmp_path: Path) -> None:
    _json(run("init", "--json"))
    loose = tmp_path / "loose.key"
    loose.write_text(encode_key(new_key()))
    loose.chmod(0o644)
    for args in (
        ("crypto-keys", "rotate-tenant", "ghost"),
        ("crypto-keys", "rotate-master", "--new-key-file", str(tmp_path / "missing.key")),
        ("crypto-keys", "rotate-master", "--new-key-file", str(loose)),
        ("crypto-keys", "rotate-master"),
    ):
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip()
    assert encode_key(read_key_file(tmp_path / "data" / "master.key")) not in proc.stderr
