"""Command names a person cannot confuse: ``apikey`` (API keys) and ``crypto-keys``
(encryption keys); the old ``key``/``keys`` still work for one release, with a note on stderr."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from appliance.cli.main import cli


@pytest.fixture
def invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in [k for k in os.environ if k.startswith("APPLIANCE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    config = tmp_path / "appliance.toml"
    config.write_text("")
    monkeypatch.setenv("APPLIANCE_CONFIG", str(config))
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "--json"], catch_exceptions=False).exit_code == 0
    return runner


def _run(runner: CliRunner, *args: str) -> Result:
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result


def test_help_lists_the_new_names_and_hides_the_old_ones(invoke: CliRunner) -> None:
    commands = {line.split()[0] for line in _run(invoke, "--help").stdout.split("Commands:")[1].splitlines() if line}
    assert {"apikey", "crypto-keys"} <= commands
    assert not {"key", "keys"} & commands


@pytest.mark.parametrize(
    ("old", "new", "args"),
    [
        ("key", "apikey", ("list", "--json")),
        ("keys", "crypto-keys", ("status", "--json")),
    ],
)
def test_old_spelling_does_the_same_and_says_it_is_deprecated_on_stderr_only(
    invoke: CliRunner, old: str, new: str, args: tuple[str, ...]
) -> None:
    current = _run(invoke, new, *args)
    deprecated = _run(invoke, old, *args)
    assert json.loads(deprecated.stdout) == json.loads(current.stdout)  # stdout stays machine-readable
    assert f"`appliance {old}` is deprecated" in deprecated.stderr
    assert f"use `appliance {new}`" in deprecated.stderr
    assert "deprecated" not in current.stderr
