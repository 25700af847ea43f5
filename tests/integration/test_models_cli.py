"""``appliance model ...`` and the ModelManager over a real (SQLite) database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from appliance.cli.context import CliState
from appliance.cli.models import model
from appliance.errors import InvalidInput, NotFound
from appliance.models import llamacpp
from appliance.models.base import ChatMessage, ChatRequest
from appliance.models.chat import LocalChatRunner
from appliance.models.classifier import LocalClassifierRunner
from appliance.models.embeddings import LocalEmbeddingRunner
from appliance.models.llamacpp import LlamaCppChatRunner
from appliance.models.manager import ModelManager
from appliance.models.registry import ModelRegistry
from appliance.models.store import ModelStore
from appliance.services.container import Services
from appliance.services.principal import Principal
from tests.support import make_services, make_settings
from tests.unit.models import support


@pytest.fixture
def sqlite_services(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Services]:
    store = support.store_root(request.config)
    settings = make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'a.db'}", models={"store_dir": store})
    services = make_services(settings)
    yield services
    services.close()


@pytest.fixture
def hf_dir(tmp_path: Path) -> Path:
    path = tmp_path / "hf"
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"\0" * 8)
    return path


def invoke(services: Services, *args: str) -> click.testing.Result:
    state = CliState(None, _settings=services.settings, _services=services)
    return CliRunner().invoke(model, list(args), obj=state, catch_exceptions=False)


def test_model_add_list_remove_round_trip_as_json(sqlite_services: Services, hf_dir: Path) -> None:
    sqlite_services.tenants.create(Principal.local_operator(), "acme")
    added = invoke(sqlite_services, "add", "acme-chat", "--kind", "chat", "--source", str(hf_dir), "--tenant", "acme")
    assert added.exit_code == 0, added.output
    up = invoke(
        sqlite_services,
        "add", "big", "--kind", "upstream", "--source", "http://10.1.2.3:8000/v1",
        "--option", "remote_model=llama", "--json",
    )  # fmt: skip
    assert json.loads(up.stdout)["options"] == {"remote_model": "llama"}
    shared = json.loads(invoke(sqlite_services, "list", "--json").stdout)
    assert [m["name"] for m in shared] == ["smollm2-135m-instruct", "all-minilm-l6-v2", "big"]
    mine = json.loads(invoke(sqlite_services, "list", "--tenant", "acme", "--json").stdout)
    assert "acme-chat" in [m["name"] for m in mine]
    assert invoke(sqlite_services, "remove", "big").exit_code == 0
    assert "big" not in invoke(sqlite_services, "list").output


def test_model_add_with_copy_puts_the_directory_in_the_store(sqlite_services: Services, hf_dir: Path) -> None:
    out = invoke(sqlite_services, "add", "copied-x", "--kind", "embedding", "--source", str(hf_dir), "--copy", "--json")
    try:
        source = Path(json.loads(out.stdout)["source"])
        assert source == sqlite_services.settings.model_dir / "copied-x"
        assert (source / "config.json").is_file()
    finally:
        import shutil

        shutil.rmtree(sqlite_services.settings.model_dir / "copied-x", ignore_errors=True)


def test_a_bad_option_is_a_usage_error(sqlite_services: Services, hf_dir: Path) -> None:
    result = CliRunner().invoke(
        model,
        ["add", "x", "--kind", "chat", "--source", str(hf_dir), "--option", "novalue"],
        obj=CliState(None, _settings=sqlite_services.settings, _services=sqlite_services),
    )
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output


@pytest.mark.slow
def test_warmup_loads_the_default_embedding_model(sqlite_services: Services) -> None:
    result = invoke(sqlite_services, "warmup", "all-minilm-l6-v2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"]["kind"] == "embedding"


@pytest.mark.slow
def test_the_manager_resolves_defaults_loads_once_and_shuts_down(sqlite_services: Services) -> None:
    settings = sqlite_services.settings
    manager = ModelManager(
        settings.models, ModelRegistry(sqlite_services.sessions, settings.models), ModelStore(settings.model_dir)
    )
    try:
        chat = manager.chat()
        # On a CPU the packaged GGUF runs on llama.cpp when the extra is installed, else on torch.
        assert isinstance(chat, LlamaCppChatRunner if llamacpp.available() else LocalChatRunner)
        assert manager.chat("smollm2-135m-instruct") is chat
        embed = asyncio.run(manager.load_embedding())
        assert manager.embedding() is embed
        assert [m.name for m in manager.visible()] == ["smollm2-135m-instruct", "all-minilm-l6-v2"]
        assert isinstance(embed, LocalEmbeddingRunner)
        with pytest.raises(InvalidInput):
            manager.chat("all-minilm-l6-v2")  # an embedding model cannot chat
        request = ChatRequest([ChatMessage("user", "Say hi.")], temperature=0, max_tokens=4)
        assert asyncio.run(chat.complete(request)).usage.completion_tokens > 0
    finally:
        manager.close()
    assert manager.loaded() == []
    with pytest.raises(Exception, match="shutting down"):
        asyncio.run(chat.complete(request))


@pytest.mark.slow
def test_a_tenant_classifier_is_added_warmed_up_and_served_by_the_manager(
    sqlite_services: Services, support_classifier: Path
) -> None:
    acme = sqlite_services.tenants.create(Principal.local_operator(), "acme")
    added = invoke(
        sqlite_services, "add", "support-clf", "--kind", "classifier", "--source", str(support_classifier),
        "--tenant", "acme",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    warm = invoke(sqlite_services, "warmup", "support-clf", "--tenant", "acme", "--json")
    assert warm.exit_code == 0, warm.output
    assert json.loads(warm.stdout)["model"]["kind"] == "classifier"
    with pytest.raises(NotFound):
        invoke(sqlite_services, "warmup", "support-clf")  # not shared: only acme sees it
    settings = sqlite_services.settings
    manager = ModelManager(settings.models, sqlite_services.model_registry, ModelStore(settings.model_dir))
    try:
        runner = asyncio.run(manager.load_classifier("support-clf", acme.id))
        assert isinstance(runner, LocalClassifierRunner)
        assert manager.classifier("support-clf", acme.id) is runner
        result = asyncio.run(runner.classify(["Please refund my invoice", "The app keeps crashing"]))
        assert [item.label for item in result.items] == ["billing", "technical"]
        with pytest.raises(InvalidInput, match="not an embedding model"):
            manager.embedding("support-clf", acme.id)
        with pytest.raises(InvalidInput, match="not a classifier"):
            manager.classifier("all-minilm-l6-v2", acme.id)
    finally:
        manager.close()
