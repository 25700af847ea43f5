"""Sealed tenant models over their lifetime: registration is all or nothing, and removal,
tenant deletion, key rotation and the maintenance sweep all reach their files. On SQLite
and PostgreSQL, with the real blob store; the model here is a small stand-in directory
(``tests/security/test_sealed_models.py`` loads a real one)."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from appliance.crypto.blobs import BlobInfo, read_header
from appliance.errors import Conflict, IntegrityError, InvalidInput
from appliance.models.sealed import FILE_KIND, MANIFEST_KIND, SealedModels
from appliance.services.container import Services
from appliance.services.key_rotation import KeyRotation
from appliance.services.principal import Principal

OP = Principal.local_operator()
CANARY = b"canary-weights-7f3a9c"


@pytest.fixture
def hf_dir(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-model"
    (path / "1_Pooling").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "note": "canary-config-51d0"}))
    (path / "model.safetensors").write_bytes(os.urandom(5000) + CANARY + os.urandom(5000))
    (path / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    return path


@pytest.fixture
def acme(services: Services) -> str:
    return services.tenants.create(OP, "acme").id


def _sealed(services: Services) -> SealedModels:
    return SealedModels(services.blobs)


def _model_blobs(services: Services, tenant_id: str) -> list[BlobInfo]:
    return [b for b in services.blobs.list(tenant_id) if b.kind in (FILE_KIND, MANIFEST_KIND)]


def _files_on_disk(services: Services, tenant_id: str) -> list[Path]:
    tenant_dir = services.settings.blob_dir / tenant_id
    return sorted(tenant_dir.iterdir()) if tenant_dir.is_dir() else []


def test_a_tenant_model_is_sealed_file_by_file_and_removing_it_deletes_the_files(
    services: Services, acme: str, hf_dir: Path
) -> None:
    info = services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    assert info.source.startswith("sealed:")
    bundle = _sealed(services).bundle(acme, info.source)
    assert [f.path for f in bundle.files] == ["1_Pooling/config.json", "config.json", "model.safetensors"]
    for f in bundle.files:
        plain = (hf_dir / f.path).read_bytes()
        assert (f.size, f.sha256) == (len(plain), hashlib.sha256(plain).hexdigest())
    assert len(_files_on_disk(services, acme)) == len(_model_blobs(services, acme)) == 4
    for path in _files_on_disk(services, acme):
        assert CANARY not in path.read_bytes()
        assert b"canary-config" not in path.read_bytes()

    assert services.model_registry.remove("acme-emb", "acme").name == "acme-emb"
    assert _model_blobs(services, acme) == []
    assert _files_on_disk(services, acme) == []


def test_a_shared_model_stays_a_plain_directory_the_operator_manages(services: Services, hf_dir: Path) -> None:
    info = services.model_registry.add("shared-emb", "embedding", str(hf_dir))
    assert info.source == str(hf_dir)
    services.model_registry.remove("shared-emb")
    assert (hf_dir / "config.json").is_file()


def test_when_sealing_fails_midway_then_neither_the_model_nor_any_file_remains(
    services: Services, acme: str, hf_dir: Path
) -> None:
    (hf_dir / "zz-unreadable").symlink_to("/proc/self/mem")  # a regular file whose first read fails
    with pytest.raises(InvalidInput, match="cannot read zz-unreadable"):
        services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    assert "acme-emb" not in {m.name for m in services.model_registry.list(acme)}
    assert _model_blobs(services, acme) == []
    assert _files_on_disk(services, acme) == []


def test_registering_a_taken_name_again_seals_nothing(services: Services, acme: str, hf_dir: Path) -> None:
    services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    before = _files_on_disk(services, acme)
    with pytest.raises(Conflict):
        services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant=acme)
    assert _files_on_disk(services, acme) == before


@pytest.mark.parametrize("source", ["sealed:0b8f6f0e-2f5c-4bb5-9f4b-1f3d1c1e2a11", "/definitely/not/here"])
def test_a_tenant_model_needs_a_real_directory(services: Services, acme: str, source: str) -> None:
    with pytest.raises(InvalidInput):
        services.model_registry.add("acme-emb", "embedding", source, tenant="acme")
    assert _model_blobs(services, acme) == []


def test_deleting_the_tenant_deletes_its_sealed_model_files(services: Services, acme: str, hf_dir: Path) -> None:
    services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    services.tenants.delete(OP, "acme")
    assert not (services.settings.blob_dir / acme).exists()
    assert "acme-emb" not in {m.name for m in services.model_registry.list(all_tenants=True)}


def test_key_rotation_re_encrypts_sealed_model_files_and_the_model_still_opens(
    services: Services, acme: str, hf_dir: Path
) -> None:
    info = services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    rotation = KeyRotation(services.sessions, services.data_keys, services.blobs, grace=timedelta(0))
    result = rotation.rotate_tenant(OP, "acme")
    assert result.blobs == 4
    assert result.destroyed_versions == [1]
    assert {b.key_version for b in _model_blobs(services, acme)} == {result.version}
    for path in _files_on_disk(services, acme):
        with path.open("rb") as fh:
            assert read_header(fh).key_version == result.version
    with _sealed(services).open(acme, info.source) as directory:
        assert (directory / "model.safetensors").read_bytes() == (hf_dir / "model.safetensors").read_bytes()


def test_the_sweep_deletes_only_old_files_no_registered_model_references(
    services: Services, acme: str, hf_dir: Path
) -> None:
    sealed = _sealed(services)
    info = services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    sealed.seal(acme, hf_dir)  # what a registration killed before its row leaves behind
    assert len(_model_blobs(services, acme)) == 8
    assert services.model_registry.sweep_sealed() == 0  # too young: it may be a seal still running
    assert services.model_registry.sweep_sealed(older_than=timedelta(0)) == 4
    assert {b.id for b in _model_blobs(services, acme)} == set(sealed.bundle(acme, info.source).blob_ids)
    with sealed.open(acme, info.source) as directory:
        assert (directory / "config.json").is_symlink()


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a//b", "./x", ""])
def test_when_a_manifest_names_a_path_outside_the_model_then_it_is_refused(
    services: Services, acme: str, hf_dir: Path, path: str
) -> None:
    sealed = _sealed(services)
    blob = sealed.bundle(acme, sealed.seal(acme, hf_dir)).files[0].blob
    manifest = json.dumps({"format": 1, "files": [{"path": path, "size": 1, "sha256": "0", "blob": blob}]})
    forged = services.blobs.put(acme, MANIFEST_KIND, manifest.encode())
    with pytest.raises(IntegrityError, match="malformed"):
        sealed.bundle(acme, f"sealed:{forged.id}")
