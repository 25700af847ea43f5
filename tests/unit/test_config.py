"""Settings: file, environment, and one clear line for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_settings
from appliance.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("APPLIANCE_"):
            monkeypatch.delenv(name)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "appliance.toml"
    p.write_text(text)
    return p


def test_file_values_are_read_and_env_overrides_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _write(tmp_path, f'data_dir = "{tmp_path}"\n[server]\nport = 9001\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("APPLIANCE_SERVER__PORT", "9002")
    s = load_settings(cfg)
    assert s.server.port == 9002
    assert s.server.host == "0.0.0.0"
    assert s.database_url == f"sqlite:///{tmp_path / 'appliance.db'}"


def test_config_path_may_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_CONFIG", str(_write(tmp_path, "[server]\nport = 7000\n")))
    assert load_settings().server.port == 7000


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        pytest.param("[server]\nport = 70000\n", {}, "server.port", id="port-out-of-range"),
        pytest.param("[server]\nport = 'eighty'\n", {}, "server.port", id="port-not-int"),
        pytest.param("[server]\nprot = 80\n", {}, "server.prot: unknown setting", id="typo-in-key"),
        pytest.param("colour = 'blue'\n", {}, "colour: unknown setting", id="unknown-top-level"),
        pytest.param("[server\nport = 1\n", {}, "config file", id="toml-syntax"),
        pytest.param("[log]\nlevel = 'LOUD'\n", {}, "log.level", id="bad-enum"),
        pytest.param("", {"APPLIANCE_SERVER__PORT": "-1"}, "APPLIANCE_SERVER__PORT", id="bad-env"),
        pytest.param("[keys]\ndev_master_key = 'x'\n", {}, "dev_mode", id="dev-key-without-dev-mode"),
    ],
)
def test_bad_setting_gives_one_line_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, env: dict[str, str], needle: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text))
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_explicit_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_settings(tmp_path / "missing.toml")
