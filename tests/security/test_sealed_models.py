"""A tenant's own model: no plaintext at rest, verified before it loads, invisible to others.

Real parts throughout: the MiniLM directory from its registry package (copied, sealed and
the copy deleted), SQLite and PostgreSQL, the blob store and the model manager.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import IntegrityError, NotFound
from appliance.models.base import ChatMessage, ChatRequest
from appliance.models.embeddings import LocalEmbeddingRunner
from appliance.models.registry import ModelInfo
from appliance.models.sealed import FILE_KIND, MANIFEST_KIND, SealedModels
from appliance.services.container import Services
from appliance.services.principal import Principal
from tests.support import database_url, make_services, make_settings
from tests.unit.models import support

OP = Principal.local_operator()
TEXTS = ["The quarterly report is late.", "Sealed weights load from memory.", "ok"]


@dataclass
class Sealed:
    services: Services
    acme: str
    globex: str
    info: ModelInfo
    samples: dict[str, bytes]

    @property
    def sealed(self) -> SealedModels:
        return SealedModels(self.services.blobs)


@pytest.fixture
def world(backend: str, tmp_path: Path) -> Iterator[Sealed]:
    """acme owns ``acme-embed``, sealed from a MiniLM copy that is gone before any load."""
    data = tmp_path / "data"
    with database_url(backend, tmp_path) as url:
        services = make_services(make_settings(data, url, models={"store_dir": data / "models"}))
        try:
            acme = services.tenants.create(OP, "acme").id
            globex = services.tenants.create(OP, "globex").id
            source = support.minilm_copy(tmp_path)
            samples = support.plaintext_samples(source)
            info = services.model_registry.add("acme-embed", "embedding", str(source), device="cpu", tenant="acme")
            shutil.rmtree(source)
            yield Sealed(services, acme, globex, info, samples)
        finally:
            services.close()


def _embed(runner: object) -> np.ndarray:
    assert isinstance(runner, LocalEmbeddingRunner)
    return np.array(asyncio.run(runner.embed(TEXTS)).vectors)


@pytest.fixture
def own_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory this test alone creates scratch directories in: the system's is
    shared with the other test workers, which load sealed models of their own meanwhile."""
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    return private


@pytest.mark.slow
def test_a_tenants_model_leaves_no_plaintext_at_rest_and_embeds_like_the_built_in(
    world: Sealed, own_tempdir: Path
) -> None:
    assert world.info.source.startswith("sealed:")
    assert world.info.owner == world.acme
    kinds = sorted({b.kind for b in world.services.blobs.list(world.acme)})
    assert kinds == [FILE_KIND, MANIFEST_KIND]
    data_dir = world.services.settings.data_dir
    assert support.files_containing(data_dir, world.samples) == []

    scratch_before, memfds_before = support.sealed_scratch_dirs(), support.open_memory_files()
    runner = world.services.models.embedding("acme-embed", world.acme)
    try:
        expected = _embed(support.shared_embeddings())
        np.testing.assert_allclose(_embed(runner), expected, rtol=0, atol=1e-6)
    finally:
        world.services.models.close()
    assert support.sealed_scratch_dirs() == scratch_before  # the symlink directory is gone
    assert support.open_memory_files() == memfds_before  # and so are the memory files
    assert support.files_containing(data_dir, world.samples) == []


def test_while_a_sealed_model_is_open_its_directory_holds_only_links_to_verified_memory(world: Sealed) -> None:
    with world.sealed.open(world.acme, world.info.source) as directory:
        entries = list(directory.rglob("*"))
        assert {p.name for p in entries} >= {"config.json", "model.safetensors", "1_Pooling", "modules.json"}
        for path in entries:
            assert path.is_symlink() or path.is_dir()
            if path.is_symlink():
                assert os.path.realpath(path).startswith("/memfd:")
        assert (directory / "config.json").read_bytes() == world.samples["config.json"]
        with pytest.raises(PermissionError):  # sealed read-only: what was verified is what loads
            (directory / "config.json").write_bytes(b"{}")
    assert not directory.exists()


def test_another_tenant_can_neither_see_nor_load_nor_open_a_tenants_model(world: Sealed) -> None:
    models, registry = world.services.models, world.services.model_registry
    assert "acme-embed" not in {m.name for m in models.visible(world.globex)}
    assert "acme-embed" not in {m.name for m in models.visible()}
    with pytest.raises(NotFound):
        models.embedding("acme-embed", world.globex)
    with pytest.raises(NotFound):
        models.embedding("acme-embed")
    with pytest.raises(NotFound), registry.open_sealed(replace(world.info, owner=world.globex)):
        pass  # even with the manifest id in hand
    bundle = world.sealed.bundle(world.acme, world.info.source)
    with pytest.raises(NotFound):
        world.services.blobs.read_bytes(world.globex, bundle.files[0].blob)
    assert models.loaded() == []


def test_when_a_sealed_file_is_tampered_with_then_loading_fails_clearly_and_nothing_stays(
    world: Sealed, caplog: pytest.LogCaptureFixture, own_tempdir: Path
) -> None:
    """The error says what failed but, like every IntegrityError, not which file (the names
    stay inside the sealed manifest); the log names the manifest and the file's index."""
    bundle = world.sealed.bundle(world.acme, world.info.source)
    index, weights = next((i, f) for i, f in enumerate(bundle.files) if f.path == "model.safetensors")
    path = world.services.blobs.path(world.acme, weights.blob)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))

    scratch_before, memfds_before = support.sealed_scratch_dirs(), support.open_memory_files()
    models = world.services.models
    caplog.set_level(logging.WARNING, logger="appliance.models.sealed")
    for _ in range(2):  # a second try fails the same way: no half-loaded runner was kept
        with pytest.raises(IntegrityError) as caught:
            models.embedding("acme-embed", world.acme)
        assert caught.value.detail == "a sealed model file failed verification; the model was not loaded"
    assert models.loaded() == []
    assert support.sealed_scratch_dirs() == scratch_before
    assert support.open_memory_files() == memfds_before
    warnings = [r.getMessage() for r in caplog.records if r.name == "appliance.models.sealed"]
    assert warnings
    assert warnings[0] == f"sealed model {bundle.manifest}: file {index} of {len(bundle.files)} failed verification"
    assert not any(f.path in line for line in warnings for f in bundle.files)


def test_when_a_manifest_does_not_match_its_files_then_the_model_does_not_open(world: Sealed) -> None:
    """A manifest sealed with the right key but the wrong digest (what a bug or a rollback
    of one file to another sealed version would look like) is refused too."""
    bundle = world.sealed.bundle(world.acme, world.info.source)
    files = [
        {"path": f.path, "size": f.size, "sha256": "0" * 64 if f.path == "config.json" else f.sha256, "blob": f.blob}
        for f in bundle.files
    ]
    manifest = json.dumps({"format": 1, "files": files}).encode()
    forged = world.services.blobs.put(world.acme, MANIFEST_KIND, manifest)
    with (
        pytest.raises(IntegrityError) as caught,
        world.sealed.open(world.acme, f"sealed:{forged.id}"),
    ):
        pass
    assert caught.value.detail == "a sealed model file does not match its manifest; the model was not loaded"


@pytest.mark.slow
def test_a_sealed_chat_model_loads_from_memory_and_answers_like_its_plain_copy(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """transformers' AutoTokenizer and AutoModelForCausalLM read through the memfd links too."""
    plain = support.smollm2_dir(support.store_root(request.config))
    data = tmp_path / "data"
    with database_url("sqlite", tmp_path) as url:
        services = make_services(make_settings(data, url, models={"store_dir": data / "models"}))
        try:
            tenant = services.tenants.create(OP, "acme").id
            info = services.model_registry.add("acme-chat", "chat", str(plain), device="cpu", tenant="acme")
            assert info.source.startswith("sealed:")
            chat = services.models.chat("acme-chat", tenant)
            request_ = ChatRequest([ChatMessage("user", "Name a colour.")], temperature=0, max_tokens=8)
            expected = asyncio.run(support.shared_chat(support.store_root(request.config)).complete(request_))
            assert asyncio.run(chat.complete(request_)).text == expected.text
        finally:
            services.close()
