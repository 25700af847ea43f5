"""Key rotation survives a failure between every step: after each injected failure every record
and blob still decrypts, and a re-run completes the rotation. On SQLite and PostgreSQL.

The failure is raised from the ``checkpoint`` seam the rotation calls after each durable step
(and before each commit); reads after a failure go through a fresh DataKeyService, so no key
cached in memory can hide a destroyed or unreadable one.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import select

from appliance.crypto.blobs import MIN_SEGMENT_SIZE, BlobStore
from appliance.crypto.data_keys import DataKeyService
from appliance.crypto.keyring import MasterKeyring, new_key
from appliance.crypto.records import DATA_PURPOSE, TenantCipher
from appliance.db.models import Blob, DataKey
from appliance.services.container import Services
from appliance.services.key_rotation import KeyRotation
from appliance.services.principal import Principal
from tests.unit.crypto.factories import SealedRef, create_sealed_rows

SEG = MIN_SEGMENT_SIZE
OP = Principal.local_operator()


class Injected(Exception):
    """The failure a test injects; distinct from anything the rotation raises itself."""


class FailAt:
    """A checkpoint that raises at its ``n``-th call and records which step that was."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0
        self.step: str | None = None

    def __call__(self, step: str) -> None:
        self.calls += 1
        if self.calls == self.n:
            self.step = step
            raise Injected(step)


@dataclass
class World:
    tenant_id: str
    slug: str
    records: dict[SealedRef, bytes] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


def _store(services: Services, keys: DataKeyService | None = None) -> BlobStore:
    return BlobStore(services.settings.blob_dir, keys or services.data_keys, services.sessions, segment_size=SEG)


def _rotation(services: Services, keys: DataKeyService | None = None) -> KeyRotation:
    keys = keys or services.data_keys
    return KeyRotation(services.sessions, keys, _store(services, keys), batch_size=2, grace=timedelta(0))


def _world(services: Services) -> World:
    slug = f"t-{secrets.token_hex(4)}"
    w = World(services.tenants.create(OP, slug).id, slug)
    for i in range(3):
        value = f"record {i} {secrets.token_hex(4)}".encode()
        for ref in create_sealed_rows(services, w.tenant_id, value):
            w.records[ref] = value
    store = _store(services)
    for size in (0, SEG, 3 * SEG + 5):
        data = os.urandom(size)
        w.blobs[store.put(w.tenant_id, "dataset", [data]).id] = data
    return w


def _fresh_keys(services: Services, ring: MasterKeyring | None = None) -> DataKeyService:
    return DataKeyService(ring or services.keyring, services.sessions)


def _assert_readable(services: Services, w: World, keys: DataKeyService) -> None:
    cipher = TenantCipher(keys)
    with services.sessions() as session:
        for ref, expected in w.records.items():
            obj = session.get(ref.column.model, ref.pk)
            assert ref.column.open(cipher, obj) == expected, ref.column.name
    store = _store(services, keys)
    for blob_id, data in w.blobs.items():
        assert store.read_bytes(w.tenant_id, blob_id) == data


def _versions(services: Services, tenant_id: str) -> list[int]:
    with services.sessions() as session:
        return sorted(
            session.scalars(select(DataKey.version).where(DataKey.scope == tenant_id, DataKey.purpose == DATA_PURPOSE))
        )


def test_tenant_rotation_moves_everything_to_the_new_version_and_destroys_the_old(services: Services) -> None:
    w = _world(services)
    other = _world(services)
    result = _rotation(services).rotate_tenant(OP, w.slug)
    assert (result.version, result.resumed, result.destroyed_versions, result.kept_versions) == (2, False, [1], [])
    assert result.records == len(w.records)
    assert result.blobs == len(w.blobs)
    assert _versions(services, w.tenant_id) == [2]
    assert _versions(services, other.tenant_id) == [1]
    refs = _rotation(services).references(w.tenant_id)
    assert set(refs) == {2}
    with services.sessions() as session:
        assert set(session.scalars(select(Blob.key_version).where(Blob.tenant_id == w.tenant_id))) == {2}
    _assert_readable(services, w, _fresh_keys(services))
    _assert_readable(services, other, _fresh_keys(services))
    # new writes use the new version at once in this process
    assert TenantCipher.key_version(TenantCipher(services.data_keys).seal(w.tenant_id, "k", "r", b"x")) == 2


def test_keep_old_leaves_the_old_version_in_place_and_a_rerun_starts_a_new_one(services: Services) -> None:
    w = _world(services)
    first = _rotation(services).rotate_tenant(OP, w.slug, keep_old=True)
    assert (first.version, first.destroyed_versions) == (2, [])
    assert _versions(services, w.tenant_id) == [1, 2]
    second = _rotation(services).rotate_tenant(OP, w.slug, keep_old=True)
    assert (second.version, second.resumed, second.records) == (3, False, len(w.records))
    _assert_readable(services, w, _fresh_keys(services))


def test_old_version_still_referenced_is_kept_and_reported(services: Services) -> None:
    w = _world(services)
    rotation = _rotation(services)
    store = _store(services)
    # a write in progress under version 1: a temp file with its header, not yet renamed
    victim = next(iter(w.blobs))
    tmp = store.path(w.tenant_id, victim).with_name("in-progress.tmp")
    tmp.write_bytes(store.path(w.tenant_id, victim).read_bytes())
    result = rotation.rotate_tenant(OP, w.slug)
    assert result.kept_versions == [1]
    assert _versions(services, w.tenant_id) == [1, 2]
    tmp.unlink()
    again = rotation.rotate_tenant(OP, w.slug)
    assert (again.resumed, again.version, again.destroyed_versions) == (True, 2, [1])


def test_tenant_rotation_survives_a_failure_after_every_step(services: Services) -> None:
    steps_seen: list[str] = []
    n = 1
    while True:
        w = _world(services)
        fail = FailAt(n)
        try:
            _rotation(services).rotate_tenant(OP, w.slug, checkpoint=fail)
        except Injected:
            pass
        else:
            break  # n is past the last step: every step has been cut once
        assert fail.step is not None
        steps_seen.append(fail.step)
        _assert_readable(services, w, _fresh_keys(services))
        result = _rotation(services, _fresh_keys(services)).rotate_tenant(OP, w.slug)
        assert result.unreadable == 0
        assert result.kept_versions == []
        latest = _versions(services, w.tenant_id)
        assert len(latest) == 1, (fail.step, latest)
        assert set(_rotation(services).references(w.tenant_id)) == set(latest)
        _assert_readable(services, w, _fresh_keys(services))
        n += 1
    expected = {
        "tenant.version-created",
        "records.batch.pending",
        "records.batch.committed",
        "blob.temp-written",
        "blob.file-swapped",
        "blob.committed",
        "tenant.version-destroy.pending",
        "tenant.version-destroyed",
    }
    assert set(steps_seen) == expected
    assert len(steps_seen) > 20


def _all_keys_unwrap(services: Services, ring: MasterKeyring) -> None:
    keys = _fresh_keys(services, ring)
    with services.sessions() as session:
        rows = list(session.execute(select(DataKey.scope, DataKey.purpose, DataKey.version)))
    assert rows
    for scope, purpose, version in rows:
        keys.key(scope, purpose, version)


def test_master_rotation_survives_a_failure_after_every_step(services: Services) -> None:
    worlds = [_world(services) for _ in range(3)]
    current = services.keyring
    n = 1
    while True:
        new = MasterKeyring(new_key(), (current.current, *current.previous))
        fail = FailAt(n)
        try:
            result = _rotation(services).rotate_master(new, checkpoint=fail)
        except Injected:
            pass
        else:
            assert result.rewrapped == result.total
            break
        _all_keys_unwrap(services, new)  # with both KEKs loaded, every DEK is readable
        for w in worlds:
            _assert_readable(services, w, _fresh_keys(services, new))
        again = _rotation(services).rotate_master(new)
        assert again.rewrapped == again.total - (fail.calls // 2)
        assert _rotation(services).rotate_master(new).rewrapped == 0  # a finished rotation is a no-op
        only_new = MasterKeyring(new.current)  # the old KEK can now be retired
        _all_keys_unwrap(services, only_new)
        for w in worlds:
            _assert_readable(services, w, _fresh_keys(services, only_new))
        current = only_new
        n += 1
    assert n > 6


@pytest.mark.parametrize("keep_old", [False, True])
def test_rotation_of_an_unknown_tenant_is_not_found(services: Services, keep_old: bool) -> None:
    from appliance.errors import NotFound

    with pytest.raises(NotFound):
        _rotation(services).rotate_tenant(OP, "ghost", keep_old=keep_old)
