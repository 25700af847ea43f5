"""installer/install.sh in a staging root: keys with the right modes, config, schema, first
operator key; re-running never replaces the key or issues a second first key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _install(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    return subprocess.run(
        [
            "bash",
            str(ROOT / "installer" / "install.sh"),
            "--root",
            str(root),
            "--venv",
            str(Path(sys.executable).parent.parent),
            "--no-systemd",
            "--no-user",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_staging_install_creates_root_only_key_config_and_first_operator_key(tmp_path: Path) -> None:
    first = _install(tmp_path)
    assert first.returncode == 0, first.stderr
    key = tmp_path / "etc/appliance/master.key"
    assert key.stat().st_mode & 0o777 == 0o400
    conf = (tmp_path / "etc/appliance/appliance.toml").read_text()
    assert f'data_dir = "{tmp_path}/var/lib/appliance"' in conf
    assert (tmp_path / "var/lib/appliance").stat().st_mode & 0o777 == 0o700
    assert "apl_" in first.stdout
    key_bytes = key.read_bytes()

    again = _install(tmp_path)
    assert again.returncode == 0, again.stderr
    assert key.read_bytes() == key_bytes
    assert "apl_" not in again.stdout

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")},
        "APPLIANCE_CONFIG": str(tmp_path / "etc/appliance/appliance.toml"),
    }
    current = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "db", "current", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(current.stdout)["up_to_date"] is True


def test_installer_rejects_unknown_options(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "installer" / "install.sh"), "--root", str(tmp_path), "--frobnicate"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown option --frobnicate" in proc.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_units_parse(tmp_path: Path) -> None:
    for unit in (ROOT / "systemd").glob("*.service"):
        proc = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
        )
        assert "Unknown key" not in proc.stderr and "Invalid" not in proc.stderr, proc.stderr
