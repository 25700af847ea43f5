"""``training.secure_mode`` cannot work on this stack: Opacus draws secure noise only from
torchcsprng, which has no release for PyTorch 2.x. The setting is refused when the
configuration loads (the CLI exits 2 naming it), not when the first job runs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import load_settings
from appliance.errors import ConfigError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torchcsprng") is not None, reason="torchcsprng is installed: secure_mode can run"
)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return path


def test_secure_mode_in_the_config_file_is_refused_naming_the_key_and_why(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_config(tmp_path, "[training]\nsecure_mode = true\n"))
    message = str(caught.value)
    assert "training.secure_mode" in message and "torchcsprng" in message and "PyTorch 2.x" in message
    assert "\n" not in message


def test_secure_mode_from_the_environment_is_refused_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_TRAINING__SECURE_MODE", "true")
    with pytest.raises(ConfigError, match="APPLIANCE_TRAINING__SECURE_MODE"):
        load_settings(_config(tmp_path, ""))


def test_secure_mode_off_loads(tmp_path: Path) -> None:
    assert load_settings(_config(tmp_path, "[training]\nsecure_mode = false\n")).training.secure_mode is False


def test_the_cli_exits_2_with_one_line_naming_secure_mode(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_DATA_DIR"] = str(tmp_path / "data")
    config = _config(tmp_path, "[training]\nsecure_mode = true\n")
    proc = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "--config", str(config), "worker", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "training.secure_mode" in proc.stderr and "torchcsprng" in proc.stderr
