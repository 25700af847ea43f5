"""Sealed tenant models over their lifetime: registration is all or nothing, and removal,
tenant deletion, key rotation and the maintenance sweep all reach their files. On SQLite
and PostgreSQL, with the real blob store; the model here is a small stand-in directory
(``tests/security/test_sealed_models.py`` loads a real one)."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete

from appliance.crypto.blobs import BlobInfo, read_header
from appliance.db.engine import transaction
from appliance.db.models import Blob
from appliance.errors import ConfigError, Conflict, IntegrityError, InvalidInput
from appliance.models.sealed import FILE_KIND, MANIFEST_KIND, MAX_FILES, SealedModels
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


@pytest.mark.parametrize("target", ["/proc/self/mem", "../../outside-secret.txt"])
def test_a_symlink_that_leads_out_of_the_model_directory_is_refused_and_nothing_is_sealed(
    services: Services, acme: str, hf_dir: Path, target: str
) -> None:
    (hf_dir.parent / "outside-secret.txt").write_text("not part of the model")
    (hf_dir / "1_Pooling" / "zz-link").symlink_to(target)
    with pytest.raises(InvalidInput, match=r"^1_Pooling/zz-link in .* leads outside the model directory") as caught:
        services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    assert "outside-secret" not in str(caught.value)
    assert "/proc" not in str(caught.value)  # names the link, not where it points
    assert "acme-emb" not in {m.name for m in services.model_registry.list(acme)}
    assert _model_blobs(services, acme) == []
    assert _files_on_disk(services, acme) == []


def test_symlinks_within_the_directory_and_a_hugging_face_cache_snapshot_are_followed(
    services: Services, acme: str, tmp_path: Path, hf_dir: Path
) -> None:
    """``<repo>/snapshots/<rev>/<file> -> ../../blobs/<sha>``, as huggingface_hub lays a cache out."""
    repo = tmp_path / "models--acme--tiny"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "0123abc"
    (snapshot / "1_Pooling").mkdir(parents=True)
    for rel in ("config.json", "model.safetensors", "1_Pooling/config.json"):
        data = (hf_dir / rel).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        depth = "../" * (rel.count("/") + 2)
        (snapshot / rel).symlink_to(f"{depth}blobs/{blob.name}")
    (snapshot / "alias.json").symlink_to("config.json")  # within the snapshot itself
    sealed = _sealed(services)
    info = services.model_registry.add("acme-emb", "embedding", str(snapshot), tenant="acme")
    files = sealed.bundle(acme, info.source).files
    assert [f.path for f in files] == ["1_Pooling/config.json", "alias.json", "config.json", "model.safetensors"]
    with sealed.open(acme, info.source) as directory:
        assert (directory / "model.safetensors").read_bytes() == (hf_dir / "model.safetensors").read_bytes()
        assert (directory / "alias.json").read_bytes() == (hf_dir / "config.json").read_bytes()


def test_snapshot_baggage_and_duplicate_weights_are_not_sealed_but_every_other_file_is(
    services: Services, acme: str, hf_dir: Path
) -> None:
    baggage = [
        ".gitattributes",
        ".git/HEAD",
        ".cache/huggingface/download/config.json.metadata",
        "onnx/model.onnx",
        "openvino/openvino_model.xml",
        "pytorch_model.bin",
        "tf_model.h5",
        "flax_model.msgpack",
        "rust_model.ot",
        "training_args.pt",
    ]
    kept = ["modules.json", "tokenizer.json", "2_Dense/pytorch_model.bin", "2_Dense/config.json"]
    for rel in baggage + kept:  # 2_Dense has no safetensors: its .bin is its only weights
        (hf_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (hf_dir / rel).write_bytes(b"x" * 10)
    info = services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    paths = [f.path for f in _sealed(services).bundle(acme, info.source).files]
    assert paths == sorted(["1_Pooling/config.json", "config.json", "model.safetensors", *kept])


def test_a_model_with_more_files_than_loading_can_hold_open_is_refused_before_sealing(
    services: Services, acme: str, hf_dir: Path
) -> None:
    extra = hf_dir / "extra"
    extra.mkdir()
    for i in range(MAX_FILES):
        (extra / f"{i}.txt").write_text(str(i))
    assert MAX_FILES <= 512  # below the usual default limit of 1024 open files
    with pytest.raises(InvalidInput, match=rf"holds {MAX_FILES + 3} files to seal; .* at most {MAX_FILES}"):
        services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    assert _files_on_disk(services, acme) == []


def test_a_file_name_longer_than_a_memory_file_name_may_be_still_loads(
    services: Services, acme: str, hf_dir: Path
) -> None:
    long_name = "t" * 245 + ".json"  # 250 bytes: a valid file name, too long to name a memfd
    (hf_dir / long_name).write_text('{"long": true}')
    info = services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    with _sealed(services).open(acme, info.source) as directory:
        assert (directory / long_name).read_text() == '{"long": true}'


def test_when_loading_runs_out_of_file_descriptors_then_the_error_says_so_without_file_names(
    services: Services, acme: str, hf_dir: Path
) -> None:
    for i in range(60):
        (hf_dir / f"secret-name-{i:02d}.txt").write_text(str(i))
    info = services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    sealed = _sealed(services)
    sealed.bundle(acme, info.source)  # connections are open before the limit drops
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 20, hard))
    try:
        with pytest.raises(ConfigError, match="needs 63 files open at once") as caught, sealed.open(acme, info.source):
            pass
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "secret-name" not in str(caught.value)
    with sealed.open(acme, info.source) as directory:  # and it loads once the limit allows
        assert sum(p.is_symlink() for p in directory.rglob("*")) == 63


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


def _shred_keys(services: Services, tenant_id: str) -> None:
    """The tenant's data keys are gone while its rows remain (what a half-done tenant deletion
    or a lost key leaves): its sealed files can no longer be read."""
    with transaction(services.sessions) as session:
        services.data_keys.destroy_scope(session, tenant_id)


def test_removing_a_model_whose_manifest_is_gone_succeeds_and_the_sweep_takes_its_files(
    services: Services, acme: str, hf_dir: Path
) -> None:
    info = services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    services.blobs.delete(acme, info.source.removeprefix("sealed:"))
    assert services.model_registry.remove("acme-emb", "acme").name == "acme-emb"
    assert "acme-emb" not in {m.name for m in services.model_registry.list(acme)}
    assert services.model_registry.sweep_sealed(older_than=timedelta(0)) == 3
    assert _model_blobs(services, acme) == []
    assert _files_on_disk(services, acme) == []


def test_removing_a_model_whose_key_is_gone_succeeds_and_the_sweep_takes_its_files(
    services: Services, acme: str, hf_dir: Path
) -> None:
    services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    _shred_keys(services, acme)
    assert services.model_registry.remove("acme-emb", "acme").name == "acme-emb"
    assert len(_model_blobs(services, acme)) == 3  # the manifest went; its files wait for the sweep
    assert services.model_registry.sweep_sealed(older_than=timedelta(0)) == 3
    assert _files_on_disk(services, acme) == []


def test_a_tenant_whose_key_is_gone_does_not_stop_the_sweep_for_the_others(
    services: Services, acme: str, hf_dir: Path
) -> None:
    globex = services.tenants.create(OP, "globex").id
    services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    _sealed(services).seal(acme, hf_dir)  # an orphan of acme's, which cannot be told apart now
    _sealed(services).seal(globex, hf_dir)  # and one of globex's
    _shred_keys(services, acme)
    assert services.model_registry.sweep_sealed(older_than=timedelta(0)) == 4
    assert _model_blobs(services, globex) == []
    assert len(_model_blobs(services, acme)) == 8  # kept: which files acme's model needs is unknown


def test_the_sweep_deletes_temp_files_and_files_without_a_row_that_a_killed_write_left(
    services: Services, acme: str, hf_dir: Path
) -> None:
    info = services.model_registry.add("acme-emb", "embedding", str(hf_dir), tenant="acme")
    tenant_dir = services.settings.blob_dir / acme
    bundle = _sealed(services).bundle(acme, info.source)
    kept = {tenant_dir / b for b in bundle.blob_ids}
    # killed before the rename: a temp file; killed before the commit: a file without a row
    weights = services.blobs.path(acme, bundle.files[-1].blob)
    temp = tenant_dir / f"{weights.name}.0123abcd.tmp"
    temp.write_bytes(weights.read_bytes())
    rowless = services.blobs.put(acme, FILE_KIND, CANARY)
    with transaction(services.sessions) as session:
        session.execute(delete(Blob).where(Blob.id == rowless.id))
    young = tenant_dir / f"{weights.name}.4567cdef.tmp"  # a write still running
    young.write_bytes(b"")
    unknown = tenant_dir / "not-a-blob.txt"  # not the blob store's: left alone
    unknown.write_bytes(b"")
    hour_ago = time.time() - 3700
    for path in (temp, services.blobs.path(acme, rowless.id), unknown, *kept):
        os.utime(path, (hour_ago, hour_ago))

    assert services.model_registry.sweep_sealed() == 2
    assert set(_files_on_disk(services, acme)) == {*kept, young, unknown}
    with _sealed(services).open(acme, info.source) as directory:
        assert (directory / "model.safetensors").read_bytes() == (hf_dir / "model.safetensors").read_bytes()
