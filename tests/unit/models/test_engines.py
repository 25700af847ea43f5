"""Which engine serves a chat model, and registering GGUF files."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import ConfigError, InvalidInput, NotSupportedYet
from appliance.models import llamacpp
from appliance.models.manager import chat_engine
from appliance.models.registry import ModelRegistry
from appliance.models.sealed import SealedModels
from appliance.services.container import Services
from appliance.services.principal import Principal

GGUF = Path("/models/x.gguf")
HAS_EXTRA = llamacpp.available()


@pytest.mark.parametrize(
    ("wanted", "device", "gguf", "engine"),
    [
        ("auto", "cpu", GGUF, "llamacpp" if HAS_EXTRA else "torch"),
        ("auto", "cuda", GGUF, "torch"),
        ("auto", "cpu", None, "torch"),
        ("torch", "cpu", GGUF, "torch"),
        ("torch", "cuda:1", None, "torch"),
    ],
)
def test_auto_runs_gguf_models_on_llamacpp_on_cpus_and_everything_else_on_torch(
    wanted: str, device: str, gguf: Path | None, engine: str
) -> None:
    assert chat_engine(wanted, device=device, gguf=gguf) == engine


@pytest.mark.parametrize(
    ("wanted", "device", "gguf", "error"),
    [
        ("llamacpp", "cpu", None, ConfigError),
        ("llamacpp", "cuda", GGUF, ConfigError),
        ("vllm", "cpu", GGUF, InvalidInput),
    ],
)
def test_an_engine_that_cannot_serve_the_model_is_refused_clearly(
    wanted: str, device: str, gguf: Path | None, error: type[Exception]
) -> None:
    with pytest.raises(error):
        chat_engine(wanted, device=device, gguf=gguf)


@pytest.fixture
def registry(services: Services) -> ModelRegistry:
    return ModelRegistry(services.sessions, services.settings.models, sealed=SealedModels(services.blobs))


@pytest.fixture
def gguf_file(tmp_path: Path) -> Path:
    path = tmp_path / "Tiny-Chat.Q4_K_M.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 28)
    return path


def test_a_gguf_file_registers_as_a_shared_chat_model(registry: ModelRegistry, gguf_file: Path) -> None:
    info = registry.add("tiny-chat", "chat", str(gguf_file), options={"engine": "llamacpp"})
    assert (info.kind, info.source, info.options) == ("chat", str(gguf_file), {"engine": "llamacpp"})


@pytest.mark.parametrize(
    ("kind", "options", "tenant", "error"),
    [
        ("embedding", {}, False, InvalidInput),
        ("chat", {"engine": "vllm"}, False, InvalidInput),
        ("chat", {}, True, NotSupportedYet),
    ],
)
def test_a_gguf_file_is_refused_where_it_cannot_be_served(
    services: Services,
    registry: ModelRegistry,
    gguf_file: Path,
    kind: str,
    options: dict[str, str],
    tenant: bool,
    error: type[Exception],
) -> None:
    slug = None
    if tenant:
        slug = services.tenants.create(Principal.local_operator(), "acme").slug
    with pytest.raises(error):
        registry.add("tiny-chat", kind, str(gguf_file), options=options, tenant=slug)


def test_a_file_named_gguf_that_is_not_one_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model")
    with pytest.raises(InvalidInput, match="not a GGUF file"):
        registry.add("fake", "chat", str(fake))
