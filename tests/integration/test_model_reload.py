"""A loaded model follows its registration: re-registered (also by another process, here a
second registry on the same database) it is served from the new registration on the next
lookup and the old runner is closed; removed, or its tenant deleted, it is unloaded, and
the inference service's short memory of runners never hands out a closed one.

Real parts: a MiniLM copy sealed as a tenant's own model, the built-in MiniLM, SQLite and
PostgreSQL, the blob store and the model manager.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import NotFound, Overloaded
from appliance.models.embeddings import LocalEmbeddingRunner
from appliance.models.registry import SHARED, ModelRegistry
from appliance.models.sealed import SealedModels
from appliance.roles import Role
from appliance.services.container import Services
from appliance.services.principal import Principal
from tests.support import database_url, make_services, make_settings
from tests.unit.models import support

pytestmark = pytest.mark.slow

OP = Principal.local_operator()
TEXTS = ["The quarterly report is late.", "ok"]
BUILTIN = "all-minilm-l6-v2"


@dataclass
class World:
    services: Services
    acme: str
    tmp: Path

    def elsewhere(self) -> ModelRegistry:
        """The registry as the CLI in another process has it: same database, not this manager."""
        settings = self.services.settings.models
        return ModelRegistry(self.services.sessions, settings, sealed=SealedModels(self.services.blobs))

    def minilm(self, name: str, *, cls_pooling: bool = False) -> Path:
        """A MiniLM copy; with ``cls_pooling`` it embeds differently (first token, not the mean)."""
        path = support.minilm_copy(self.tmp / name)
        if cls_pooling:
            pooling = path / "1_Pooling" / "config.json"
            config = json.loads(pooling.read_text())
            config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
            pooling.write_text(json.dumps(config))
        return path


@pytest.fixture
def world(backend: str, tmp_path: Path) -> Iterator[World]:
    data = tmp_path / "data"
    with database_url(backend, tmp_path) as url:
        services = make_services(make_settings(data, url, models={"store_dir": data / "models"}))
        try:
            acme = services.tenants.create(OP, "acme").id
            world = World(services, acme, tmp_path)
            services.model_registry.add("acme-embed", "embedding", str(world.minilm("v1")), device="cpu", tenant="acme")
            yield world
        finally:
            services.close()


def _embed(runner: object) -> np.ndarray:
    assert isinstance(runner, LocalEmbeddingRunner)
    return np.array(asyncio.run(runner.embed(TEXTS)).vectors)


def _closed(runner: object) -> bool:
    try:
        _embed(runner)
    except Overloaded as exc:
        return "shutting down" in str(exc)
    return False


def test_a_model_re_registered_by_another_process_is_served_from_the_new_registration(world: World) -> None:
    models = world.services.models
    old = models.embedding("acme-embed", world.acme)
    before = _embed(old)
    assert models.embedding("acme-embed", world.acme) is old  # loaded once

    cli = world.elsewhere()
    cli.remove("acme-embed", "acme")
    cli.add("acme-embed", "embedding", str(world.minilm("v2", cls_pooling=True)), device="cpu", tenant="acme")

    new = models.embedding("acme-embed", world.acme)
    assert new is not old
    assert _closed(old)
    assert not np.allclose(_embed(new), before, atol=1e-3)  # the retrained model answers
    assert models.loaded() == [(world.acme, "acme-embed")]


def test_a_runner_closed_for_a_new_registration_is_not_handed_out_by_the_inference_service(world: World) -> None:
    services = world.services
    app = Principal(key_id="app", role=Role.APP, tenant_id=world.acme, tenant_slug="acme")
    before = asyncio.run(services.inference.embed(app, "acme-embed", TEXTS)).vectors  # runner now remembered
    cli = world.elsewhere()
    cli.remove("acme-embed", "acme")
    cli.add("acme-embed", "embedding", str(world.minilm("v2", cls_pooling=True)), device="cpu", tenant="acme")

    services.models.embedding("acme-embed", world.acme)  # another request's lookup replaces the runner
    after = asyncio.run(services.inference.embed(app, "acme-embed", TEXTS)).vectors  # no 503 from the old one
    assert not np.allclose(np.array(after), np.array(before), atol=1e-3)


def test_a_model_removed_by_another_process_is_unloaded(world: World) -> None:
    models = world.services.models
    runner = models.embedding("acme-embed", world.acme)
    world.elsewhere().remove("acme-embed", "acme")
    assert models.reconcile() == [(world.acme, "acme-embed")]  # what lookups run every few seconds
    assert _closed(runner)
    assert models.loaded() == []

    cli = world.elsewhere()
    cli.add("acme-embed", "embedding", str(world.minilm("v2")), device="cpu", tenant="acme")
    models.embedding("acme-embed", world.acme)
    cli.remove("acme-embed", "acme")
    with pytest.raises(NotFound):
        models.embedding("acme-embed", world.acme)  # the lookup that finds it gone unloads it
    assert models.loaded() == []


def test_deleting_a_tenant_unloads_its_models_and_leaves_the_shared_built_in_alone(world: World) -> None:
    services = world.services
    models = services.models
    builtin = models.embedding(BUILTIN, world.acme)
    expected = _embed(builtin)
    own = models.embedding("acme-embed", world.acme)
    _embed(own)
    gone = weakref.ref(own)
    assert sorted(models.loaded()) == sorted([(SHARED, BUILTIN), (world.acme, "acme-embed")])

    services.tenants.delete(OP, "acme")

    assert models.loaded() == [(SHARED, BUILTIN)]
    assert _closed(own)
    del own
    gc.collect()
    assert gone() is None  # nothing holds the runner, so nothing holds its decrypted weights
    assert models.embedding(BUILTIN) is builtin
    np.testing.assert_allclose(_embed(builtin), expected, rtol=0, atol=1e-6)


def test_forget_unloads_by_owner_or_name(world: World) -> None:
    models = world.services.models
    builtin = models.embedding(BUILTIN)
    own = models.embedding("acme-embed", world.acme)
    assert models.forget(owner="some-other-tenant") == []
    assert models.forget(name="acme-embed") == [(world.acme, "acme-embed")]
    assert _closed(own)
    assert not _closed(builtin)
    assert models.loaded() == [(SHARED, BUILTIN)]
